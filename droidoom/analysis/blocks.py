"""Blocks as the unit of replication: what `compare` tests, and what it could have seen.

A run writes each kind in blocks of consecutive writes (scenario.in_blocks), so writes of
one block share the moment's host state (a load burst, a frequency step, a neighbour's cache
churn) and are not independent: a CI over single writes is far too narrow. Here each block
is one observation (its median over its timed writes) and a point's comparison is between
the block medians of BASE and NEW (Chromium Pinpoint's rule, catapult
dashboard/pinpoint/models/compare):

- DIFFERENT when p <= `ALPHA` (the smaller p of a two-sample Kolmogorov-Smirnov and a
  Mann-Whitney U test on the block medians), the ratio lies beyond the threshold and its
  CI excludes 1;
- SAME when the comparison had the power to see a change of the threshold's size: the
  minimum detectable effect (`mde`, a ratio) is at most the threshold;
- otherwise UNKNOWN: more blocks (longer runs, or more runs per side) are needed, not a guess.

The ratio's CI is a bootstrap over blocks (both sides, and the control's blocks when the
ratio is relative to it): it widens with between-block variance and narrows with more
blocks; no fixed allowance is added. A side that pools several runs is a two-level sample:
its bootstrap draws runs, then blocks within them, and its MDE adds the between-run
variance component; a side of one run cannot show that component (one run per side on a
host whose speed shifts between runs is the weak spot: see README, compare's power).

Runs from before blocks (kinds took turns write by write, run.json `blocks.block` 1) have
no natural blocks: each kind's writes of one sweep point are cut, in write order, into
chunks of `LEGACY_BLOCK` consecutive writes of that kind, and those chunks are the blocks.
A run of one kind (no switches) is chunked the same way.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Writes per block for runs without blocks (and for one-kind runs): scenario's default.
LEGACY_BLOCK = 50
#: Blocks with fewer timed writes than this (the cut-off tail of a point) are left out.
MIN_BLOCK_WRITES = 5
#: DIFFERENT needs p at or below this (Pinpoint's low threshold).
ALPHA = 0.01
#: SAME needs a change of the threshold's size to be detected with this probability.
POWER = 0.80
#: Fewer blocks than this on a side: the spread cannot be estimated, the MDE is infinite.
MIN_BLOCKS = 3


def block_table(df: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """One row per block: the `by` keys, ``run_id``, ``count`` (timed writes) and
    ``median_ns``. A block is a run of consecutive writes of one kind within one sweep
    point of one run (see the module doc for runs without blocks); warm-up writes, failed
    writes and rows without a value are left out of its median. Blocks with fewer than
    `MIN_BLOCK_WRITES` timed writes are dropped."""
    by = list(by)
    cols = ["run_id", *by, "visit", "count", "median_ns"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    run = _codes(df["run_id"]) if "run_id" in df.columns else np.zeros(len(df), np.int64)
    point = df["point"].to_numpy(np.int64) if "point" in df.columns else np.zeros(len(df), np.int64)
    seq = df["seq"].to_numpy(np.int64) if "seq" in df.columns else np.arange(len(df))
    kind = _codes(df["kind"]) if "kind" in df.columns else np.zeros(len(df), np.int64)
    # runs whose kinds alternate write by write: no natural blocks (legacy layout)
    order = np.lexsort((seq, point, run))
    r, p, s, k = run[order], point[order], seq[order], kind[order]
    brk = _breaks(r, p, k) | np.r_[True, s[1:] != s[:-1] + 1]
    segs_per_run = np.bincount(r[brk], minlength=run.max() + 1)
    rows_per_run = np.bincount(r, minlength=run.max() + 1)
    legacy = rows_per_run < 3 * np.maximum(segs_per_run, 1)
    if legacy.any():  # regroup those runs by kind: (run, point, kind) in write order
        leg = legacy[run]
        order = np.lexsort((seq, np.where(leg, kind, 0), point, run))
        r, p, s, k = run[order], point[order], seq[order], kind[order]
        gap = np.r_[True, s[1:] != s[:-1] + 1] & ~leg[order]
        brk = _breaks(r, p, k) | gap
    seg = np.cumsum(brk) - 1
    start = np.flatnonzero(brk)
    pos = np.arange(len(seg)) - start[seg]
    length = np.diff(np.r_[start, len(seg)])[seg]
    # long segments of legacy runs and one-kind runs (no switches) are cut into chunks of
    # LEGACY_BLOCK; a blocked run's long blocks (--block 400) stay whole: their writes
    # share one stretch of time, so cutting them would understate the spread
    pairs = np.unique(np.stack([run, kind]), axis=1)  # (run, kind) pairs present
    kinds_per_run = np.bincount(pairs[0], minlength=len(legacy))
    cut = (legacy | (kinds_per_run == 1))[r]
    brk |= cut & (length > 2 * LEGACY_BLOCK) & (pos % LEGACY_BLOCK == 0)
    block = np.cumsum(brk) - 1
    bstart = np.flatnonzero(brk)
    keep = (df["err"].to_numpy()[order] == 0) if "err" in df.columns else np.ones(len(df), bool)
    if "warmup" in df.columns:
        keep &= ~df["warmup"].to_numpy(dtype=bool)[order]
    lat = df["latency_ns"].to_numpy(dtype=np.float64, na_value=np.nan)[order]
    keep &= ~np.isnan(lat)
    frame = pd.DataFrame({"_block": block[keep], "latency_ns": lat[keep]})
    grouped = frame.groupby("_block", sort=True)["latency_ns"]
    stats = pd.DataFrame({"count": grouped.size(), "median_ns": grouped.median()})
    stats = stats[stats["count"] >= MIN_BLOCK_WRITES]
    first = order[bstart[stats.index.to_numpy()]]
    keys = df.iloc[first][["run_id", *by] if "run_id" in df.columns else by]
    out = keys.reset_index(drop=True)
    if "run_id" not in out.columns:
        out.insert(0, "run_id", "")
    out["visit"] = p[bstart[stats.index.to_numpy()]]  # the sweep point (one visit of a population)
    out["count"] = stats["count"].to_numpy()
    out["median_ns"] = stats["median_ns"].to_numpy()
    result: pd.DataFrame = out[cols]
    return result


def _codes(s: pd.Series) -> np.ndarray:
    if isinstance(s.dtype, pd.CategoricalDtype):
        return s.cat.codes.to_numpy(np.int64)
    return pd.factorize(s)[0].astype(np.int64)


def _breaks(r: np.ndarray, p: np.ndarray, k: np.ndarray) -> np.ndarray:
    """True where a new run, sweep point or kind starts (rows in sorted order)."""
    out = np.ones(len(r), dtype=bool)
    out[1:] = (r[1:] != r[:-1]) | (p[1:] != p[:-1]) | (k[1:] != k[:-1])
    return out


@dataclass(frozen=True)
class Decision:
    """One point's comparison of block medians."""

    ratio: float  # new / base, of the median block medians (relative to the control's)
    ci_low: float
    ci_high: float
    p: float  # min of the KS and Mann-Whitney U p-values (1.0 when not testable)
    mde: float  # smallest ratio (>= 1) this comparison detects with POWER (inf: none)
    base_blocks: int
    new_blocks: int

    def decision(self, max_ratio: float) -> str:
        """SAME, DIFFERENT or UNKNOWN at threshold `max_ratio` (see the module doc)."""
        beyond = self.ratio > max_ratio or self.ratio < 1 / max_ratio
        # and the CI excludes 1: with several runs a side that CI is clustered by run, so
        # runs that merely sit at different levels are not a change
        if self.p <= ALPHA and beyond and not self.ci_low <= 1 <= self.ci_high:
            return "DIFFERENT"
        return "SAME" if self.mde <= max_ratio else "UNKNOWN"


def decide(
    base: np.ndarray,
    new: np.ndarray,
    controls: tuple[np.ndarray, np.ndarray] | None = None,
    *,
    runs: Sequence[np.ndarray] | None = None,
    confidence: float = 0.95,
    n_boot: int = 2000,
    rng: np.random.Generator | None = None,
    time_var: float = 0.0,
) -> Decision:
    """Compare two sides' block medians (ns). `controls`: (base, new) block medians of the
    control kind at the same point; the ratio is then new/control over base/control, the
    test runs on each side's blocks divided by its control level, and the control's spread
    enters the CI and the MDE. `runs`: the run of each block (base, new[, controls]) when
    a side pools several runs: the CI's bootstrap then resamples runs, then blocks within
    them, and the spread between runs enters the MDE. `time_var`: variance of the log
    ratio that the blocks cannot show (see `visit_var`): it widens the CI and the MDE."""
    from scipy import stats

    rng = rng or np.random.default_rng(0)
    b = np.asarray(base, dtype=np.float64)
    n = np.asarray(new, dtype=np.float64)
    cb, cn = (np.asarray(c, dtype=np.float64) for c in controls) if controls else (None, None)
    lb, ln = (1.0, 1.0) if cb is None or cn is None else (_med(cb), _med(cn))
    ratio = (_med(n) / ln) / max(_med(b) / lb, 1e-9)
    if len(b) == 0 or len(n) == 0:
        return Decision(ratio, float("nan"), float("nan"), 1.0, float("inf"), len(b), len(n))
    sides = [b, n] if cb is None or cn is None else [b, n, cb, cn]
    labels = list(runs)[: len(sides)] if runs is not None else [None] * len(sides)
    boot = [_boot_median(x, lab, n_boot, rng) for x, lab in zip(sides, labels, strict=True)]
    r = boot[1] / np.maximum(boot[0], 1e-9)
    if len(boot) == 4:
        r *= boot[2] / np.maximum(boot[3], 1e-9)
    alpha = (1 - confidence) / 2
    lo, hi = (float(q) for q in np.quantile(r, [alpha, 1 - alpha]))
    if time_var > 0:
        widen = float(np.exp(stats.norm.ppf(1 - alpha) * np.sqrt(time_var)))
        lo, hi = lo / widen, hi * widen
    p = 1.0
    if len(b) >= 2 and len(n) >= 2:
        bs, ns_ = b / lb, n / ln
        if not np.array_equal(np.sort(bs), np.sort(ns_)):
            with warnings.catch_warnings():  # ties: scipy falls back to the asymptotic p
                warnings.simplefilter("ignore", RuntimeWarning)
                ks = stats.ks_2samp(bs, ns_).pvalue
            mw = stats.mannwhitneyu(bs, ns_, alternative="two-sided").pvalue
            p = float(min(ks, mw))
    return Decision(ratio, lo, hi, p, mde(sides, labels, time_var), len(b), len(n))


def mde(sides: Sequence[np.ndarray], runs: Sequence[np.ndarray | None] | None = None,
        time_var: float = 0.0) -> float:
    """Minimum detectable effect, as a ratio: the change of the median that a test at
    `ALPHA` (two-sided) sees with probability `POWER`, given each side's block count and
    between-block spread (robust: 1.4826 x MAD of log block medians). ``sides``: base, new
    and optionally the two controls (their spread adds to the ratio's). `runs`: each
    block's run, per side: a side of several runs adds the spread between its runs' levels
    (beyond what their blocks explain) over the number of runs; a side of one run cannot
    show it. Infinite when a side has fewer than `MIN_BLOCKS` blocks or the rank test could
    not reach `ALPHA` with so few blocks whatever the data."""
    from math import comb

    from scipy import stats

    nb, nn = len(sides[0]), len(sides[1])
    if min(len(x) for x in sides) < MIN_BLOCKS or 2 / comb(nb + nn, nb) > ALPHA:
        return float("inf")
    labels = list(runs) if runs is not None else [None] * len(sides)
    var = time_var + sum(_side_var(np.log(np.maximum(x, 1.0)), lab)
                         for x, lab in zip(sides, labels, strict=True))  # fmt: skip
    df = nb + nn - 2
    t = float(stats.t.ppf(1 - ALPHA / 2, df) + stats.t.ppf(POWER, df))
    return float(np.exp(t * np.sqrt(var)))


def _side_var(logs: np.ndarray, runs: np.ndarray | None) -> float:
    """Variance of one side's log level: blocks' spread over their count, plus, for a side
    of k >= 2 runs, the between-run variance component over k."""
    block = _robust_sd(logs) ** 2
    var = block / len(logs)
    if runs is None:
        return var
    _, code, count = np.unique(runs, return_inverse=True, return_counts=True)
    if len(count) < 2:
        return var
    levels = np.array([np.median(logs[code == i]) for i in range(len(count))])
    between = max(float(np.var(levels, ddof=1)) - float(np.mean(block / count)), 0.0)
    return var + between / len(count)


def _robust_sd(x: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


def _med(x: np.ndarray) -> float:
    return float(np.median(x)) if len(x) else float("nan")


def _boot_median(
    x: np.ndarray, runs: np.ndarray | None, n_boot: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap medians of one side's blocks: blocks resampled, or, for a side of several
    runs, runs first and then blocks within the runs drawn (a clustered bootstrap)."""
    k = 1 if runs is None else len(np.unique(runs))
    if runs is None or k < 2:
        idx = rng.integers(0, len(x), (n_boot, len(x)))
    else:
        order = np.argsort(runs, kind="stable")
        x = x[order]
        _, code, count = np.unique(runs[order], return_inverse=True, return_counts=True)
        start = np.r_[0, np.cumsum(count)[:-1]]
        picks = rng.integers(0, k, (n_boot, k))  # each run's slots filled from a drawn run
        chosen = picks[:, code]  # (n_boot, blocks)
        idx = start[chosen] + (rng.random(chosen.shape) * count[chosen]).astype(np.int64)
    medians: np.ndarray = np.median(x[idx], axis=1)
    return medians


def visit_var(logs: np.ndarray, runs: np.ndarray, visits: np.ndarray) -> float | None:
    """Variance of one visit's log level beyond what its blocks explain, from a point a
    run visited more than once (the sweep goes up and back down): how much the level moves
    with time. Blocks of one visit share one stretch of time, so their spread cannot show
    it, and a point visited once (the top of the sweep) would look more certain than it
    is. None when no run visited the point twice."""
    found = []
    for run in np.unique(runs):
        mine = runs == run
        vs = np.unique(visits[mine])
        if len(vs) < 2:
            continue
        groups = [logs[mine & (visits == v)] for v in vs]
        if min(len(g) for g in groups) < 2:
            continue
        levels = np.array([np.median(g) for g in groups])
        within = float(np.mean([_robust_sd(g) ** 2 / len(g) for g in groups]))
        found.append(max(float(np.var(levels, ddof=1)) - within, 0.0))
    return float(np.mean(found)) if found else None
