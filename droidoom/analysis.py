"""Statistics over the samples frame: summaries, O(1)/O(N) scaling fits, the fixed/regressed
verdict per device, and run-to-run comparison.

Everything is vectorised: groups are found from categorical codes, quantiles are read off one
sorted array, and only the few fit / bootstrap groups (device x kind x mode [x population])
are looped over in Python, never the rows.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from .errors import DataError, UsageError

#: Default grouping of `summary` and `compare`.
GROUP_KEYS: tuple[str, ...] = ("device", "kind", "mode", "population")
#: Column name -> quantile reported by `summary` (numpy "linear" interpolation).
QUANTILES: dict[str, float] = dict(
    p10_ns=0.10, p25_ns=0.25, median_ns=0.50, p75_ns=0.75, p90_ns=0.90, p99_ns=0.99
)

# Scaling classification. Mostly relative to the fitted latency at the smallest population
# ("base"), because both the base and the walk's cost per process differ ~10x between an x86
# VM (~40 ns/process) and a phone's little core (~250 ns/process); plus one absolute floor.
#: O(N) when even the CI's lowest slope makes latency at least double over the sweep ...
ON_MIN_GROWTH = 1.0
#: ... or when the CI's lowest slope is walk-sized on its own. The cheapest walk measured is
#: ~35 ns/process (x86 VM); writes that skip the walk grow < 1 ns/process. This catches the
#: walk when the base is already high (many processes alive before the sweep, e.g. a phone).
WALK_MIN_SLOPE_NS = 5.0
#: O(1) when the fitted slope grows latency by at most 25% over the sweep, the CI's highest
#: slope stays below doubling and below `WALK_MIN_SLOPE_NS`. With 3-6 points the Theil-Sen CI
#: is about the min..max pairwise slope, so one noisy point on a busy 2-core VM widens it a
#: lot; the 25% rule alone is on the (robust) median slope.
O1_MAX_GROWTH = 0.25
MIN_POPULATIONS = 3

_U32 = np.int64(0xFFFFFFFF)


# --------------------------------------------------------------------------- run metadata


def load_meta(run_dir: str | Path) -> dict:
    """run.json of a run directory as a dict (DataError if it is not a run)."""
    from .store import read_run  # the one place analysis touches run directories

    return read_run(run_dir).meta


def _metas_by_device(meta: Mapping | Iterable[Mapping] | None) -> dict[str, Mapping]:
    if meta is None:
        return {}
    metas = [meta] if isinstance(meta, Mapping) else list(meta)
    metas = [getattr(m, "meta", m) for m in metas]  # store.RunInfo works too
    return {str(m.get("device")): m for m in metas}


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


# --------------------------------------------------------------------------- scaling


@dataclass(frozen=True)
class Fit:
    """Theil-Sen fit of per-point median latency against population for one device x kind x mode.

    The intercept is median(y - slope * x) ("joint"), so the line runs through the points.

    ``slope_ns`` is ns per extra process with its 95% CI ``ci_low``..``ci_high``; ``base_ns``
    is the fitted latency at the smallest population and ``growth`` = slope x range / base.
    """

    device: str
    kind: str
    mode: str
    slope_ns: float
    ci_low: float
    ci_high: float
    intercept_ns: float
    base_ns: float
    growth: float
    r2: float
    n_points: int
    n_populations: int
    pop_min: int
    pop_max: int
    complexity: str  # "O(1)" | "O(N)" | "inconclusive"
    reason: str

    def slope_text(self) -> str:
        """E.g. ``+41.2 ns/process, 95% CI 40.1..42.0``."""
        if not np.isfinite(self.slope_ns):
            return "no slope"
        return (
            f"{_num(self.slope_ns, sign=True)} ns/process, "
            f"95% CI {_num(self.ci_low)}..{_num(self.ci_high)}"
        )


def _num(x: float, sign: bool = False) -> str:
    """Short ns figure: 2 decimals below 1, 1 below 10, none above; no "-0.00"."""
    digits = 2 if abs(x) < 1 else 1 if abs(x) < 10 else 0
    x = 0.0 if round(x, digits) == 0 else x
    return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"


def _classify(slope, lo, hi, base, span) -> tuple[str, str]:
    growth, g_lo, g_hi = (s * span / base for s in (slope, lo, hi))
    pct = f"{growth:+.0%} over the sweep"
    if lo > 0 and g_lo >= ON_MIN_GROWTH:
        return "O(N)", f"{pct}; even the CI's low slope doubles the latency"
    if lo >= WALK_MIN_SLOPE_NS:
        return "O(N)", f"{pct}; the CI's low slope is walk-sized (>= {WALK_MIN_SLOPE_NS:g} ns)"
    if abs(growth) <= O1_MAX_GROWTH and g_hi < ON_MIN_GROWTH and hi < WALK_MIN_SLOPE_NS:
        return "O(1)", f"{pct} (<= {O1_MAX_GROWTH:.0%}); the CI excludes doubling and a walk"
    return "inconclusive", f"{pct}; CI allows {g_lo:+.0%}..{g_hi:+.0%}"


def _fit_one(key: tuple, pts: pd.DataFrame) -> Fit:
    x = pts["population"].to_numpy(dtype=float)
    y = pts["median_ns"].to_numpy(dtype=float)
    x, y = x[np.isfinite(y)], y[np.isfinite(y)]
    n_pop, nan = len(np.unique(x)), float("nan")
    slope = intercept = lo = hi = r2 = growth = nan
    span = float(np.ptp(x)) if len(x) else 0.0
    # what was measured at the smallest population: the base when the fit's is unusable
    base = float(np.median(y[x == x.min()])) if len(x) else nan
    if n_pop < MIN_POPULATIONS:
        complexity = "inconclusive"
        reason = f"needs >= {MIN_POPULATIONS} populations with data, has {n_pop}"
    else:
        slope, intercept, lo, hi = map(float, stats.theilslopes(y, x, alpha=0.95, method="joint"))
        fitted_base = intercept + slope * x.min()
        base = fitted_base if fitted_base > 0 else max(base, 1.0)
        ss_tot = float(np.sum((y - y.mean()) ** 2))
        r2 = 1 - float(np.sum((y - intercept - slope * x) ** 2)) / ss_tot if ss_tot > 0 else nan
        growth = slope * span / base
        complexity, reason = _classify(slope, lo, hi, base, span)
    pop_min, pop_max = (int(x.min()), int(x.max())) if len(x) else (0, 0)
    return Fit(
        *map(str, key), slope, lo, hi, intercept, base, growth, r2, len(y), n_pop,
        pop_min, pop_max, complexity, reason,
    )  # fmt: skip


def point_medians(df: pd.DataFrame) -> pd.DataFrame:
    """Median latency per sweep point (device x kind x mode x run x point x population)."""
    by = ["device", "kind", "mode", "run_id", "point", "population"]
    return summary(df, by=by)[by + ["count", "median_ns"]]


def fits(df: pd.DataFrame) -> list[Fit]:
    """`Fit` objects per device x kind x mode, in table order (see `scaling`)."""
    pts = point_medians(df)
    groups = pts.groupby(["device", "kind", "mode"], observed=True, sort=True)
    return [_fit_one(key, g) for key, g in groups]


def scaling(df: pd.DataFrame) -> pd.DataFrame:
    """ns per extra process per device x kind x mode: Theil-Sen on per-point medians.

    Columns: device, kind, mode, slope_ns, ci_low, ci_high (95% CI of the slope),
    intercept_ns, base_ns (fit at the smallest population), growth (slope x population range
    / base), r2, n_points, n_populations, pop_min, pop_max, complexity, reason.

    complexity is "O(N)" when ci_low > 0 and either ci_low x range >= `ON_MIN_GROWTH` x base
    (latency at least doubles even at the pessimistic slope) or ci_low >= `WALK_MIN_SLOPE_NS`;
    "O(1)" when |growth| <= `O1_MAX_GROWTH`, ci_high x range < `ON_MIN_GROWTH` x base and
    ci_high < `WALK_MIN_SLOPE_NS`; "inconclusive" otherwise, or with fewer than
    `MIN_POPULATIONS` distinct populations.
    """
    rows = [asdict(f) for f in fits(df)]
    return pd.DataFrame(rows, columns=list(Fit.__dataclass_fields__))


# --------------------------------------------------------------------------- verdict

#: Stable releases that carry 67197a4f28d2 (MMF_MULTIPROCESS), all released 2020-10-29.
FIX_BACKPORTS: dict[tuple[int, int], int] = {(4, 14): 203, (4, 19): 153, (5, 4): 73}
WALK_INTRODUCED = (4, 8)  # 44a70adec910
FIX_MAINLINE = (5, 10)


def parse_release(release: str | None) -> tuple[int, int, int] | None:
    """(major, minor, patch) of a kernel release such as ``5.4.61-android11-2-g...``."""
    if not release:
        return None
    m = re.search(r"(?<![\d.])(\d{1,2})\.(\d{1,3})(?:\.(\d{1,4}))?", release)
    if not m or not 2 <= int(m.group(1)) <= 9:
        return None
    return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)


def kernel_expectation(release: str | None) -> str:
    """What the kernel version predicts for threaded writes.

    "unaffected" before v4.8 (no walk), "fixed" from v5.10 or a stable release carrying the
    backport (`FIX_BACKPORTS`), "regressed" for other 4.8 <= version < 5.10, "unknown" when the
    release cannot be parsed. Vendor kernels may differ: `verdict` reports disagreement.
    """
    v = parse_release(release)
    if v is None:
        return "unknown"
    if v[:2] < WALK_INTRODUCED:
        return "unaffected"
    if v[:2] >= FIX_MAINLINE:
        return "fixed"
    fixed_at = FIX_BACKPORTS.get(v[:2])
    return "fixed" if fixed_at is not None and v[2] >= fixed_at else "regressed"


@dataclass(frozen=True)
class Verdict:
    """Per-device conclusion; ``sentence`` is a one-liner for the CLI."""

    device: str
    status: str  # "fixed" | "regressed" | "inconclusive"
    mode: str
    threaded: Fit | None
    multiprocess: Fit | None
    control_ok: bool  # multiprocess (positive control) is O(N)
    kernel_release: str | None
    expectation: str  # kernel_expectation(kernel_release)
    consistent: bool | None  # behaviour agrees with the version; None = cannot tell
    sentence: str = field(default="")


def _kernel_note(status: str, release: str | None, both_flat: bool) -> tuple[bool | None, str]:
    """(behaviour agrees with the version?, sentence) - None when it cannot be told."""
    v, expect = parse_release(release), kernel_expectation(release)
    if v is None:
        return None, "kernel release unknown: no version cross-check."
    ver, fixed_at = "{}.{}.{}".format(*v), FIX_BACKPORTS.get(v[:2])
    disagree = "(version and behaviour disagree)"
    if expect == "unaffected":
        what = f"{ver} predates the walk (v4.8)"
        if status != "inconclusive":
            return False, f"{what}, yet writes walk: the kernel carries 44a70adec910 {disagree}."
        return (
            (True, f"{what}: consistent with no walk at all.") if both_flat else (None, what + ".")
        )
    if expect == "fixed":
        what = f"{ver} is post-fix"
        other = f"{ver} should carry the fix, yet threaded writes walk: a vendor change undoes it"
    else:
        what = f"{ver} predates the fix ({f'{v[0]}.{v[1]}.{fixed_at}' if fixed_at else '5.10'})"
        other = f"{what}, yet threaded writes are O(1): the vendor kernel carries a backport"
    if status == expect:
        return True, f"{what}: consistent."
    if status == "inconclusive":
        return None, f"{what}."
    return False, f"{other} {disagree}."


def _verdict_one(device, mode, t: Fit | None, m: Fit | None, release) -> Verdict:
    control_ok = m is not None and m.complexity == "O(N)"
    status = "inconclusive"
    if t is None:
        first = "no threaded writes in this run"
    elif t.complexity == "O(N)":
        status = "regressed"
        first = (
            f"threaded writes are O(N) ({t.slope_text()}): every multi-threaded app pays the "
            "__set_oom_adj process walk (the 2020 regression)"
        )
    elif t.complexity == "O(1)" and control_ok:
        status = "fixed"
        first = f"threaded writes are O(1) ({t.slope_text()}): this kernel carries the "
        first += "MMF_MULTIPROCESS fix"
    elif t.complexity == "O(1)":
        first = f"threaded writes are O(1) ({t.slope_text()}) but without a working control"
    else:
        first = f"threaded writes are inconclusive ({t.slope_text()}; {t.reason})"
        if t.n_populations < MIN_POPULATIONS:
            first = f"threaded writes cannot be fitted ({t.reason})"
    if m is None:
        second = (
            "no multiprocess writes (target not spawned, e.g. under qemu-user), so no positive "
            "control: the run cannot show that the walk is measurable here"
        )
    elif m.n_populations < MIN_POPULATIONS:
        second = f"multiprocess cannot be fitted either ({m.reason}), so no positive control"
    elif control_ok:
        second = f"multiprocess {_num(m.slope_ns, sign=True)} ns/process confirms the walk is "
        second += "measurable here"
    else:
        second = (
            f"multiprocess is {m.complexity} ({m.slope_text()}), so this run could not show "
            f"the walk (populations up to {m.pop_max} too small, or a kernel without the walk)"
        )
    both_flat = all(f is not None and f.complexity == "O(1)" for f in (t, m))
    consistent, third = _kernel_note(status, release, both_flat)
    return Verdict(
        device, status, mode, t, m, control_ok, release, kernel_expectation(release),
        consistent, f"{first}; {second}; {third}",
    )  # fmt: skip


def verdict(
    df: pd.DataFrame,
    meta: Mapping | Iterable[Mapping] | None = None,
    *,
    mode: str | None = None,
    fitted: Sequence[Fit] | None = None,
) -> list[Verdict]:
    """Fixed / regressed / inconclusive per device, with evidence and a version cross-check.

    "regressed": threaded writes are O(N). "fixed": threaded writes are O(1) *and* the
    multiprocess target (which the kernel must still walk) is O(N) - without that positive
    control a flat threaded curve may only mean the populations were too small, so the
    verdict is "inconclusive". `meta` is one run.json dict or several (matched by "device");
    its target.kernel_release is checked with `kernel_expectation`. `mode` defaults to
    "reopen" (what lmkd does) when the device has it.
    """
    fitted = list(fitted) if fitted is not None else fits(df)
    metas = _metas_by_device(meta)
    only = next(iter(metas.values())) if len(metas) == 1 else None
    out = []
    for device in sorted({f.device for f in fitted}):
        mine = [f for f in fitted if f.device == device]
        modes = [f.mode for f in mine]
        use = mode if mode is not None else ("reopen" if "reopen" in modes else modes[0])
        by_kind = {f.kind: f for f in mine if f.mode == use}
        m = metas.get(device, only) or {}
        release = (m.get("target") or {}).get("kernel_release")
        out.append(
            _verdict_one(device, use, by_kind.get("threaded"), by_kind.get("multiprocess"), release)
        )
    return out


# --------------------------------------------------------------------------- compare


@dataclass(frozen=True)
class Comparison:
    """Result of `compare`: one row per group present in both runs."""

    table: pd.DataFrame
    max_ratio: float
    confidence: float
    paired: tuple[str, str] | None = None  # (base device, new device) when matched by pairing

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
        return bool(self.table["regression"].any())


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
    its upper bound is below 1 / `max_ratio`. The CI is a percentile bootstrap of
    median(new*)/median(base*) over `n_boot` resamples of at most `max_samples` writes per
    side. Devices match by name; `pair_devices=True` matches a single-device `base` with a
    single-device `new` of another name (e.g. two phones or builds). `by` may drop
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

        hint = "" if pair_devices else "; to compare two devices, pass pair_devices=True"
        raise DataError(
            f"the runs share no {' x '.join(by)} group with successful writes: base has "
            f"{describe(base)}; new has {describe(new)}{hint}"
        )
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    rows = []
    for i, j in zip(both["_b"], both["_n"], strict=True):
        b, n = bg.values(i), ng.values(j)
        boot = _boot_medians(n, n_boot, max_samples, rng) / np.maximum(
            _boot_medians(b, n_boot, max_samples, rng), 1
        )
        lo, hi = np.quantile(boot, [alpha, 1 - alpha])
        bm, nm = float(np.median(b)), float(np.median(n))
        rows.append((len(b), len(n), bm, nm, nm / max(bm, 1.0), lo, hi))
    cols = ["base_count", "new_count", "base_median_ns", "new_median_ns", "ratio"]
    table = pd.concat(
        [
            bg.keys.iloc[both["_b"].to_numpy()].reset_index(drop=True),
            pd.DataFrame(rows, columns=cols + ["ci_low", "ci_high"]),
        ],
        axis=1,
    )
    table["regression"] = table["ci_low"] > max_ratio
    table["improvement"] = table["ci_high"] < 1 / max_ratio
    return Comparison(table.reset_index(drop=True), max_ratio, confidence, paired)
