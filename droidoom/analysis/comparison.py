"""Run-to-run comparison, plus (re-exported from `.stats` and `.verdicts`)
the per-group summaries, the O(1)/O(N) scaling fits and the fixed/regressed verdict.

Everything is vectorised: groups are found from categorical codes (see `droidoom.analysis.stats`),
and only the few fit / bootstrap groups (device x kind x mode [x population]) are looped
over in Python, never the rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ..errors import DataError, UsageError
from ..schema import timed
from .kernels import FIX_BACKPORTS, FIX_MAINLINE, WALK_INTRODUCED, kernel_expectation, parse_release
from .stats import GROUP_KEYS, QUANTILES, Sorted, point_medians, quantile_grid, sort_groups, summary
from .verdicts import (
    FIXED_MAX_SHARE,
    MIN_POPULATIONS,
    O1_MAX_GROWTH,
    ON_MIN_GROWTH,
    WALK_MIN_GROWTH,
    WALK_MIN_SLOPE_NS,
    Fit,
    Verdict,
    fits,
    scaling,
    verdict,
)

# --------------------------------------------------------------------------- run metadata


def load_meta(run_dir: str | Path) -> dict[str, Any]:
    """run.json of a run directory as a dict (DataError if it is not a run)."""
    from ..store import read_run  # the one place analysis touches run directories

    return read_run(run_dir).meta


# --------------------------------------------------------------------------- compare


#: Between-run spread that within-run CIs do not cover, as a share of the ratio: the CI of
#: new/base is widened by it on both sides. Measured on this project's busy 2-core VM: raw
#: medians of unchanged kernels drifted up to ~20% between runs; the same medians divided by
#: their run's `single` median (same machine, same moment) drift less.
RAW_FLOOR = 0.25
RELATIVE_FLOOR = 0.15
#: Fewer timed writes than this on either side of a compared group: too thin to judge.
MIN_COMPARED_WRITES = 50
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
    def thin(self) -> pd.DataFrame:
        """Rows with too few writes on a side to be judged (a run cut short)."""
        return self.table[self.table["thin"]] if "thin" in self.table else self.table.iloc[:0]

    @property
    def has_regression(self) -> bool:
        return bool(self.table["regression"].any()) or not self.slope_regressions.empty


#: (device, mode) key (`by` without kind and population) -> the control's writes pooled,
#: their median and the block noise (see `_control_levels`).
_Controls = dict[tuple[str, ...], tuple[np.ndarray, float, float]]
#: One compared group: counts, medians, ratio, CI, raw ratio, basis, floor.
_Row = tuple[int, int, float, float, float, float, float, float, str, float]


def _boot_medians(x: np.ndarray, n_boot: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    if len(x) > cap:  # a random subsample: CI a bit wider (conservative), cost bounded
        x = rng.choice(x, cap, replace=False)
    idx = rng.integers(0, len(x), (n_boot, len(x)), dtype=np.int32)
    medians: np.ndarray = np.median(x[idx], axis=1)
    return medians


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
    min_writes: int = MIN_COMPARED_WRITES,
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
    "population" to pool each kind's writes. A group with fewer than `min_writes` timed
    writes on either side is ``thin``: shown, never judged. Raises DataError when no group
    overlaps.
    """
    if not max_ratio > 1:
        raise UsageError(f"max_ratio must be > 1 (e.g. 1.10 for +10%), got {max_ratio}")
    by = list(by)
    new, paired = _pair(base, new) if pair_devices else (new, None)
    bg, ng = sort_groups(base, by), sort_groups(new, by)
    both = _overlap(bg, ng, by, base, new, pair_devices)
    rng = np.random.default_rng(seed)
    alpha = (1 - confidence) / 2
    controls = _control_levels(bg, by), _control_levels(ng, by)
    rest = [k for k in by if k not in ("kind", "population")]
    rows = [
        _compare_one(bg, ng, i, j, rest, controls, (n_boot, max_samples, alpha), rng)
        for i, j in zip(both["_b"], both["_n"], strict=True)
    ]
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
    # A point either side barely measured (a run cut short seconds in) is not judged: its
    # median is a handful of writes, and a cut-short NEW once "regressed" x2.9 that way.
    table["thin"] = (table["base_count"] < min_writes) | (table["new_count"] < min_writes)
    judged &= ~table["thin"]
    table["regression"] = judged & (table["ci_low"] > max_ratio)
    table["improvement"] = judged & (table["ci_high"] < 1 / max_ratio)
    slopes = compare_slopes(base, new) if "population" in base.columns else None
    return Comparison(table.reset_index(drop=True), max_ratio, confidence, paired, slopes)


def _pair(base: pd.DataFrame, new: pd.DataFrame) -> tuple[pd.DataFrame, tuple[str, str]]:
    """`new` relabelled as `base`'s one device, and the (base, new) device names."""
    bdev, ndev = (sorted(d["device"].astype(str).unique()) for d in (base, new))
    if len(bdev) != 1 or len(ndev) != 1:
        raise UsageError(
            f"pair_devices needs one device per side; base has {bdev}, new has {ndev}"
        )
    return new.assign(device=pd.Categorical([bdev[0]] * len(new))), (bdev[0], ndev[0])


def _labelled(g: Sorted, by: list[str], name: str) -> pd.DataFrame:
    """Groups with successful writes, keys as plain values for merging, row in `name`."""
    cats = {k: str for k in by if isinstance(g.keys[k].dtype, pd.CategoricalDtype)}
    return g.keys.astype(cats).assign(**{name: np.arange(len(g.keys))})[g.counts > 0]


def _overlap(
    bg: Sorted, ng: Sorted, by: list[str], base: pd.DataFrame, new: pd.DataFrame, paired: bool
) -> pd.DataFrame:
    """The groups both sides have (their rows in `_b`, `_n`); DataError when none."""
    both = _labelled(bg, by, "_b").merge(_labelled(ng, by, "_n"), on=by)
    if both.empty:

        def describe(d: pd.DataFrame) -> str:
            return ", ".join(f"{k}={sorted(d[k].unique().tolist())}" for k in by)

        hint = "" if paired else "; to compare two devices, pass --pair (pair_devices=True)"
        raise DataError(
            f"the runs share no {' x '.join(by)} group with successful writes: base has "
            f"{describe(base)}; new has {describe(new)}{hint}"
        )
    return both


def _compare_one(
    bg: Sorted,
    ng: Sorted,
    i: int,
    j: int,
    rest: list[str],
    controls: tuple[_Controls, _Controls],
    boot_args: tuple[int, int, float],
    rng: np.random.Generator,
) -> _Row:
    """Group `i` of base against group `j` of new: the ratio of medians (vs the control's
    level when both runs have one) and its bootstrap CI widened by the between-run floor."""
    n_boot, max_samples, alpha = boot_args
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
    lo, hi = (float(q) for q in np.quantile(boot, [alpha, 1 - alpha]))
    return (len(b), len(n), bm, nm, ratio, lo / (1 + floor), hi * (1 + floor), raw,
            basis, floor)  # fmt: skip


def _control_levels(g: Sorted, by: list[str]) -> _Controls:
    """Per device x mode (`by` without kind and population): the `CONTROL_KIND` writes of all
    points pooled, their median (the run's level), and the block noise: the largest
    relative deviation of one point's control median from that level. The control never
    walks, so that deviation is what one block of writes moves for reasons other than the
    kernel (host load bursts), the between-run spread a single run can show."""
    if "kind" not in by:
        return {}
    rest = [k for k in by if k not in ("kind", "population")]
    kinds = g.keys["kind"].astype(str).to_numpy()
    found: dict[tuple[str, ...], list[int]] = {}
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
    ok = timed(df[df["kind"].astype(str) == CONTROL_KIND])
    if ok.empty:
        return {}
    med = ok.groupby([ok["device"].astype(str), ok["mode"].astype(str)])["latency_ns"].median()
    # grouped by two str Series: every key is a (device, mode) tuple of str
    return {cast(tuple[str, str], k): max(float(v), 1.0) for k, v in med.items()}


__all__ = [
    "GROUP_KEYS", "QUANTILES", "load_meta", "summary", "quantile_grid", "point_medians",
    "Comparison", "compare", "Fit", "fits", "scaling", "Verdict", "verdict",
    "kernel_expectation", "parse_release", "FIX_BACKPORTS", "FIX_MAINLINE", "WALK_INTRODUCED",
    "MIN_POPULATIONS", "O1_MAX_GROWTH", "ON_MIN_GROWTH", "WALK_MIN_SLOPE_NS",
]  # fmt: skip
