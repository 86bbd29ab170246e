"""Statistics over the samples frame: summaries, run-to-run comparison, and (re-exported
from `droidoom.verdict`) the O(1)/O(N) scaling fits and the fixed/regressed verdict.

Everything is vectorised: groups are found from categorical codes, quantiles are read off one
sorted array, and only the few fit / bootstrap groups (device x kind x mode [x population])
are looped over in Python, never the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError, UsageError

#: Default grouping of `summary` and `compare`.
GROUP_KEYS: tuple[str, ...] = ("device", "kind", "mode", "population")
#: Column name -> quantile reported by `summary` (numpy "linear" interpolation).
QUANTILES: dict[str, float] = dict(
    p10_ns=0.10, p25_ns=0.25, median_ns=0.50, p75_ns=0.75, p90_ns=0.90, p99_ns=0.99
)

_U32 = np.int64(0xFFFFFFFF)


# --------------------------------------------------------------------------- run metadata


def load_meta(run_dir: str | Path) -> dict:
    """run.json of a run directory as a dict (DataError if it is not a run)."""
    from .store import read_run  # the one place analysis touches run directories

    return read_run(run_dir).meta


# --------------------------------------------------------------------------- grouping core


_MAX_CODES = 1 << 18  # key combinations searched directly; more are factorized first


@dataclass(frozen=True)
class _Sorted:
    """Rows sorted by (group, value) in one int64 array: ``code << 32 | value``.

    Codes [0, n) hold successful writes, [n, 2n) failed ones (err != 0) and [2n, 3n) rows
    without a value, so one sort splits them too. Row i of `keys` is group ``codes[i]`` whose
    successful values are ``packed[starts[i]:starts[i] + counts[i]] & 0xFFFFFFFF``.
    """

    keys: pd.DataFrame
    packed: np.ndarray
    codes: np.ndarray
    starts: np.ndarray
    counts: np.ndarray
    errors: np.ndarray

    def values(self, i: int) -> np.ndarray:
        return self.packed[self.starts[i] : self.starts[i] + self.counts[i]] & _U32


def _sort_groups(df: pd.DataFrame, by: Sequence[str], column: str = "latency_ns") -> _Sorted:
    """Group and sort `df` with as few full-size temporaries as possible (each costs page
    faults: this is most of summary()'s time on 10M rows)."""
    combined, dims, decoders = None, [], []
    for col in by:
        s = df[col]
        if isinstance(s.dtype, pd.CategoricalDtype):
            c, n, off = s.cat.codes.to_numpy(), len(s.cat.categories), 0
            if len(c) and c.min() < 0:
                raise DataError(f"column {col!r} has missing values; the run data is damaged")
            decoders.append(lambda i, dt=s.dtype: pd.Categorical.from_codes(i, dtype=dt))
        else:
            a = s.to_numpy()
            is_int = np.issubdtype(a.dtype, np.integer)
            lo, hi = (int(a.min()), int(a.max())) if is_int and len(a) else (0, 1 << 16)
            if hi - lo < 1 << 16:  # small integer range: the value is its own code
                c, n, off = a, hi - lo + 1, lo
                decoders.append(lambda i, lo=lo, dt=a.dtype: (i + lo).astype(dt))
            else:
                c, u = pd.factorize(a, sort=True)
                n, off = max(len(u), 1), 0
                decoders.append(lambda i, u=u: u[i])
        if combined is None:
            combined = c.astype(np.int64)
        else:
            combined *= n
            combined += c
        if off:
            combined -= off
        dims.append(n)
    n_codes, lookup = int(np.prod(dims)), None
    if n_codes > _MAX_CODES:
        combined, lookup = pd.factorize(combined, sort=True)
        combined, n_codes = combined.astype(np.int64), len(lookup)
    err = df["err"].to_numpy() != 0
    combined[err] += n_codes
    vals = df[column]
    if vals.hasnans:  # successful rows without a value (e.g. no ftrace event): band 2
        combined[vals.isna().to_numpy() & ~err] += 2 * n_codes
        vals = vals.fillna(0)
    v = vals.to_numpy(dtype=np.int64)
    if len(v) and (v.min() < 0 or v.max() > _U32):  # the helper saturates at 2^32-1 anyway
        v = np.clip(v, 0, _U32)
    combined <<= 32
    combined |= v
    combined.sort()
    bounds = np.searchsorted(combined, np.arange(3 * n_codes + 1, dtype=np.int64) << 32)
    sizes = np.diff(bounds).reshape(3, n_codes)
    codes = np.flatnonzero(sizes.sum(axis=0))
    parts = np.unravel_index(codes if lookup is None else lookup[codes], dims)
    keys = pd.DataFrame({c: dec(p) for c, dec, p in zip(by, decoders, parts, strict=True)})
    return _Sorted(keys, combined, codes, bounds[codes], sizes[0, codes], sizes[1, codes])


def _quantile(g: _Sorted, q: float) -> np.ndarray:
    """Linear-interpolated quantile q of each group (NaN for groups without values)."""
    n = g.counts
    pos = g.starts + q * np.maximum(n - 1, 0)
    lo = np.minimum(np.floor(pos).astype(np.int64), len(g.packed) - 1)
    hi = np.minimum(lo + 1, np.maximum(g.starts + n - 1, 0))
    lo_v, hi_v = (g.packed[np.maximum(i, 0)] & _U32 for i in (lo, hi))
    return np.where(n > 0, lo_v + (hi_v - lo_v) * (pos - lo), np.nan)


def _mad(g: _Sorted, medians: np.ndarray) -> np.ndarray:
    """Exact median absolute deviation per group, without a second sort.

    The k-th smallest |v - m| is the smallest t with #{v : m - t <= v <= m + t} > k; that count
    is two searchsorted calls on the sorted array, so bisect t for all groups at once. Work in
    doubled units so a half-integer median stays an integer.
    """
    ok = g.counts > 0
    m2 = np.where(ok, np.nan_to_num(medians) * 2, 0).astype(np.int64)
    code = g.codes.astype(np.int64) << 32

    def kth(k):  # k-th (0-based) smallest doubled deviation per group
        lo = np.zeros(len(m2), dtype=np.int64)
        hi = np.full(len(m2), 2 * int(_U32) + 1, dtype=np.int64)
        while np.any(lo < hi):
            t = (lo + hi) // 2
            a = np.maximum(-((t - m2) // 2), 0)  # ceil((m2 - t) / 2): smallest v inside
            b = np.minimum((m2 + t) // 2, _U32)  # floor((m2 + t) / 2): largest v inside
            inside = np.searchsorted(g.packed, code | b, side="right")
            enough = inside - np.searchsorted(g.packed, code | a) > k
            hi = np.where(enough, t, hi)
            lo = np.where(enough, lo, t + 1)
        return lo

    mad2 = (kth((g.counts - 1) // 2) + kth(g.counts // 2)) / 4.0
    return np.where(ok, mad2, np.nan)


def summary(
    df: pd.DataFrame, by: Sequence[str] = GROUP_KEYS, column: str = "latency_ns"
) -> pd.DataFrame:
    """Latency statistics per device x kind x mode x population (or any `by`).

    Columns: the `by` keys, ``count`` (successful writes), ``errors`` (writes with err != 0,
    excluded from the statistics), ``median_ns``, ``p10_ns`` .. ``p99_ns`` (see `QUANTILES`,
    linear interpolation like numpy), ``mad_ns`` (raw median absolute deviation, not scaled
    by 1.4826), ``min_ns``, ``max_ns``. `column` may be ``kernel_ns`` (rows without a kernel
    event are skipped). Groups with only failed writes have NaN statistics.
    """
    by = list(by)
    stat_cols = ["median_ns"] + [c for c in QUANTILES if c != "median_ns"]
    cols = by + ["count", "errors", *stat_cols, "mad_ns", "min_ns", "max_ns"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    g = _sort_groups(df, by, column)
    out = g.keys
    out["count"], out["errors"] = g.counts, g.errors
    for name in stat_cols:
        out[name] = _quantile(g, QUANTILES[name])
    out["mad_ns"] = _mad(g, out["median_ns"].to_numpy())
    out["min_ns"], out["max_ns"] = _quantile(g, 0.0), _quantile(g, 1.0)
    return out[cols]


def quantile_grid(
    df: pd.DataFrame, probs: Sequence[float], by: Sequence[str] = GROUP_KEYS
) -> tuple[pd.DataFrame, np.ndarray]:
    """Latency quantiles at `probs` per group: (group keys, array groups x probs) in ns."""
    g = _sort_groups(df, list(by))
    return g.keys, np.stack([_quantile(g, q) for q in probs], axis=1)


def point_medians(df: pd.DataFrame) -> pd.DataFrame:
    """Median latency per sweep point (device x kind x mode x run x point x population)."""
    by = ["device", "kind", "mode", "run_id", "point", "population"]
    return summary(df, by=by)[by + ["count", "median_ns"]]


# --------------------------------------------------------------------------- compare


#: Between-run spread that within-run CIs do not cover, as a share of the ratio: the CI of
#: new/base is widened by it on both sides. Measured on this project's busy 2-core VM: raw
#: medians of unchanged kernels drifted up to ~20% between runs; the same medians divided by
#: their run's `single` median (same machine, same moment) drift less.
RAW_FLOOR = 0.25
RELATIVE_FLOOR = 0.15
#: The kind every run has and no kernel change touches: latency is compared relative to it.
CONTROL_KIND = "single"
#: A slope regression needs the slope-difference CI's low end above both this share of the
#: base slope and the smallest walk (`WALK_MIN_SLOPE_NS`).
SLOPE_FLOOR = 0.25
#: ... and, for a kind that already walked on BASE (multiprocess), its whole base slope: the
#: cost of one walk step moved up to ~66% between runs of one kernel on a loaded TCG host.
WALKING_SLOPE_FLOOR = 1.0


@dataclass(frozen=True)
class Comparison:
    """Result of `compare`: one row per group present in both runs (`table`), and one per
    device x kind x mode with the scaling slopes of both sides (`slopes`)."""

    table: pd.DataFrame
    max_ratio: float
    confidence: float
    paired: tuple[str, str] | None = None  # (base device, new device) when matched by pairing
    slopes: pd.DataFrame | None = None

    @property
    def slope_regressions(self) -> pd.DataFrame:
        """Kinds whose ns/process grew beyond the slope floor (e.g. threaded writes that
        walk on NEW and did not on BASE)."""
        if self.slopes is None or self.slopes.empty:
            return pd.DataFrame()
        return self.slopes[self.slopes["regression"]]

    @property
    def regressions(self) -> pd.DataFrame:
        """Rows whose CI lower bound of new/base exceeds max_ratio."""
        return self.table[self.table["regression"]]

    @property
    def improvements(self) -> pd.DataFrame:
        """Rows whose CI upper bound of new/base is below 1 / max_ratio."""
        return self.table[self.table["improvement"]]

    @property
    def has_regression(self) -> bool:
        return bool(self.table["regression"].any()) or not self.slope_regressions.empty


def _boot_medians(x: np.ndarray, n_boot: int, cap: int, rng) -> np.ndarray:
    if len(x) > cap:  # a random subsample: CI a bit wider (conservative), cost bounded
        x = rng.choice(x, cap, replace=False)
    idx = rng.integers(0, len(x), (n_boot, len(x)), dtype=np.int32)
    return np.median(x[idx], axis=1)


def compare(
    base: pd.DataFrame,
    new: pd.DataFrame,
    max_ratio: float = 1.10,
    *,
    by: Sequence[str] = GROUP_KEYS,
    pair_devices: bool = False,
    n_boot: int = 1000,
    max_samples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> Comparison:
    """Median latency ratio new/base per group present in both, with a bootstrap CI.

    A group is a regression when the CI's lower bound exceeds `max_ratio`, an improvement when
    its upper bound is below 1 / `max_ratio`. What a kernel change changes is compared, not
    how fast the machine was that day: each kind's median is divided by the same point's
    `CONTROL_KIND` level of its own run (median of all its control writes; ``basis``
    "vs single"; the control itself and groups without one compare raw medians, ``basis``
    "raw", ``raw_ratio`` always). The CI is a percentile bootstrap of that ratio over
    `n_boot` resamples of at most `max_samples` writes per side, widened on both sides by
    the between-run ``floor``: `RELATIVE_FLOOR` / `RAW_FLOOR`, or more when either run's
    control points scatter more (see `_control_levels`). ``slopes`` compares ns/process per
    kind (`compare_slopes`); a slope regression counts in ``has_regression`` too. Devices
    match by name; `pair_devices=True` matches a single-device `base` with a single-device
    `new` of another name (e.g. two phones or builds). `by` may drop
    "population" to pool each kind's writes. Raises DataError when no group overlaps.
    """
    if not max_ratio > 1:
        raise UsageError(f"max_ratio must be > 1 (e.g. 1.10 for +10%), got {max_ratio}")
    by = list(by)
    paired = None
    if pair_devices:
        bdev, ndev = (sorted(d["device"].astype(str).unique()) for d in (base, new))
        if len(bdev) != 1 or len(ndev) != 1:
            raise UsageError(
                f"pair_devices needs one device per side; base has {bdev}, new has {ndev}"
            )
        paired = (bdev[0], ndev[0])
        new = new.assign(device=pd.Categorical([bdev[0]] * len(new)))
    bg, ng = _sort_groups(base, by), _sort_groups(new, by)

    def labelled(g, name):  # groups with successful writes, keys as plain values for merging
        cats = {k: str for k in by if isinstance(g.keys[k].dtype, pd.CategoricalDtype)}
        return g.keys.astype(cats).assign(**{name: np.arange(len(g.keys))})[g.counts > 0]

    both = labelled(bg, "_b").merge(labelled(ng, "_n"), on=by)
    if both.empty:

        def describe(d):
            return ", ".join(f"{k}={sorted(d[k].unique().tolist())}" for k in by)

        hint = "" if pair_devices else "; to compare two devices, pass --pair (pair_devices=True)"
        raise DataError(
            f"the runs share no {' x '.join(by)} group with successful writes: base has "
            f"{describe(base)}; new has {describe(new)}{hint}"
        )
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    controls = _control_levels(bg, by), _control_levels(ng, by)
    rest = [k for k in by if k not in ("kind", "population")]
    rows = []
    for i, j in zip(both["_b"], both["_n"], strict=True):
        b, n = bg.values(i), ng.values(j)
        boot = _boot_medians(n, n_boot, max_samples, rng) / np.maximum(
            _boot_medians(b, n_boot, max_samples, rng), 1
        )
        bm, nm = float(np.median(b)), float(np.median(n))
        raw = nm / max(bm, 1.0)
        ratio, basis = raw, "raw"
        cb = controls[0].get(tuple(str(bg.keys[k].iloc[i]) for k in rest))
        cn = controls[1].get(tuple(str(ng.keys[k].iloc[j]) for k in rest))
        noise = max(cb[2] if cb else 0.0, cn[2] if cn else 0.0)
        floor = max(RAW_FLOOR, noise)
        if cb and cn and str(bg.keys["kind"].iloc[i]) != CONTROL_KIND:
            boot *= _boot_medians(cb[0], n_boot, max_samples, rng) / np.maximum(
                _boot_medians(cn[0], n_boot, max_samples, rng), 1
            )
            ratio = raw * cb[1] / max(cn[1], 1.0)
            basis, floor = f"vs {CONTROL_KIND}", max(RELATIVE_FLOOR, noise)
        lo, hi = np.quantile(boot, [alpha, 1 - alpha])
        rows.append((len(b), len(n), bm, nm, ratio, lo / (1 + floor), hi * (1 + floor), raw,
                     basis, floor))  # fmt: skip
    cols = ["base_count", "new_count", "base_median_ns", "new_median_ns", "ratio"]
    table = pd.concat(
        [
            bg.keys.iloc[both["_b"].to_numpy()].reset_index(drop=True),
            pd.DataFrame(rows, columns=cols + ["ci_low", "ci_high", "raw_ratio", "basis", "floor"]),
        ],
        axis=1,
    )
    # The control's own latency is shown (raw_ratio) but not judged across runs: between
    # runs it moved up to ~1.9x on a loaded host with the same kernel. What a kernel change
    # does to the oom_score_adj path shows relative to it, and in the slopes.
    judged = (table["basis"] != "raw") | ~table["kind"].astype(str).eq(CONTROL_KIND) if (
        "kind" in table.columns) else pd.Series(True, index=table.index)
    table["regression"] = judged & (table["ci_low"] > max_ratio)
    table["improvement"] = judged & (table["ci_high"] < 1 / max_ratio)
    slopes = compare_slopes(base, new) if "population" in base.columns else None
    return Comparison(table.reset_index(drop=True), max_ratio, confidence, paired, slopes)


def _control_levels(g: _Sorted, by: list[str]) -> dict[tuple, tuple[np.ndarray, float, float]]:
    """Per device x mode (`by` without kind and population): the `CONTROL_KIND` writes of all
    points pooled, their median (the run's level), and the block noise: the largest
    relative deviation of one point's control median from that level. The control never
    walks, so that deviation is what one block of writes moves for reasons other than the
    kernel (host load bursts), the between-run spread a single run can show."""
    if "kind" not in by:
        return {}
    rest = [k for k in by if k not in ("kind", "population")]
    kinds = g.keys["kind"].astype(str).to_numpy()
    found: dict[tuple, list[int]] = {}
    for i in np.flatnonzero(kinds == CONTROL_KIND):
        if g.counts[i] > 0:
            found.setdefault(tuple(str(g.keys[k].iloc[i]) for k in rest), []).append(int(i))
    out = {}
    for key, idx in found.items():
        vals = np.concatenate([g.values(i) for i in idx])
        level = float(np.median(vals))
        noise = max(abs(float(np.median(g.values(i))) / max(level, 1.0) - 1) for i in idx)
        out[key] = (vals, level, noise)
    return out


def compare_slopes(base: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """ns/process of both sides per device x kind x mode (fits with >= MIN_POPULATIONS points).

    NEW's slopes are first scaled by BASE's / NEW's `CONTROL_KIND` level (a slower machine
    also walks slower; ``new_slope_ns`` is the scaled value). The difference's CI is
    conservative: new.ci_low - base.ci_high .. new.ci_high - base.ci_low. ``regression``
    when its low end, less any growth of the `CONTROL_KIND` slope (a host that slowed down
    as the population grew), exceeds ``bar``: the largest of `WALK_MIN_SLOPE_NS`,
    `SLOPE_FLOOR` (`WALKING_SLOPE_FLOOR` for a kind that already walked) x |base slope| and
    `FIXED_MAX_SHARE` x the base's multiprocess slope (what a walk costs on that device):
    a kind that started to walk.
    """
    from .verdict import FIXED_MAX_SHARE, WALK_MIN_GROWTH

    cols = ["device", "kind", "mode", "base_slope_ns", "new_slope_ns", "diff_ns", "diff_low",
            "diff_high", "bar_ns", "regression"]  # fmt: skip
    fb = {(f.device, f.kind, f.mode): f for f in fits(base) if np.isfinite(f.slope_ns)}
    fn = {(f.device, f.kind, f.mode): f for f in fits(new) if np.isfinite(f.slope_ns)}
    lb, ln = _control_level(base), _control_level(new)
    rows = []
    for key in sorted(fb.keys() & fn.keys()):
        b, n = fb[key], fn[key]
        # NEW's slopes in BASE's machine speed: a machine 30% slower walks 30% slower too
        k = lb.get((key[0], key[2]), 1.0) / ln.get((key[0], key[2]), 1.0)
        n = replace(n, slope_ns=n.slope_ns * k, ci_low=n.ci_low * k, ci_high=n.ci_high * k)
        lo, hi = n.ci_low - b.ci_high, n.ci_high - b.ci_low
        ctl = (key[0], CONTROL_KIND, key[2])
        drift = fn[ctl].slope_ns - fb[ctl].slope_ns if ctl in fb and ctl in fn else 0.0
        walk = fb.get((key[0], "multiprocess", key[2]))
        walked = walk is not None and b.slope_ns >= FIXED_MAX_SHARE * walk.slope_ns
        floor = WALKING_SLOPE_FLOOR if walked else SLOPE_FLOOR
        bar = max(WALK_MIN_SLOPE_NS, floor * abs(b.slope_ns),
                  FIXED_MAX_SHARE * walk.slope_ns if walk is not None else 0.0)  # fmt: skip
        # as in the verdict: when the CI is wide (3 points, one disturbed block), a point
        # estimate of at least half a walk that multiplies latency is decisive
        # (only for a kind that did not walk on BASE: a walk that merely got noisier is not)
        big = walk is not None and walk.growth >= WALK_MIN_GROWTH and n.growth >= (
            WALK_MIN_GROWTH / 2) and n.slope_ns - b.slope_ns - drift >= 0.5 * walk.slope_ns and (
            b.slope_ns < FIXED_MAX_SHARE * walk.slope_ns)
        rows.append([*key, b.slope_ns, n.slope_ns, n.slope_ns - b.slope_ns, lo, hi, bar,
                     key[1] != CONTROL_KIND and (lo - max(drift, 0.0) > bar or big)])  # fmt: skip
    return pd.DataFrame(rows, columns=cols)


def _control_level(df: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(device, mode) -> median latency of the run's `CONTROL_KIND` writes (all points)."""
    ok = df[(df["kind"].astype(str) == CONTROL_KIND) & (df["err"] == 0)]
    if ok.empty:
        return {}
    med = ok.groupby([ok["device"].astype(str), ok["mode"].astype(str)])["latency_ns"].median()
    return {k: max(float(v), 1.0) for k, v in med.items()}


# Scaling fits and the verdict live in droidoom.verdict; imported last because verdict.fits
# calls back into point_medians above. `droidoom.analysis.verdict` etc. keep working.
from .verdict import (  # noqa: E402
    FIX_BACKPORTS,
    FIX_MAINLINE,
    MIN_POPULATIONS,
    O1_MAX_GROWTH,
    ON_MIN_GROWTH,
    WALK_INTRODUCED,
    WALK_MIN_SLOPE_NS,
    Fit,
    Verdict,
    fits,
    kernel_expectation,
    parse_release,
    scaling,
    verdict,
)

__all__ = [
    "GROUP_KEYS", "QUANTILES", "load_meta", "summary", "quantile_grid", "point_medians",
    "Comparison", "compare", "Fit", "fits", "scaling", "Verdict", "verdict",
    "kernel_expectation", "parse_release", "FIX_BACKPORTS", "FIX_MAINLINE", "WALK_INTRODUCED",
    "MIN_POPULATIONS", "O1_MAX_GROWTH", "ON_MIN_GROWTH", "WALK_MIN_SLOPE_NS",
]  # fmt: skip
