"""Run-to-run comparison, plus (re-exported from `.stats` and `.verdicts`)
the per-group summaries, the O(1)/O(N) scaling fits and the fixed/regressed verdict.

Everything is vectorised: groups are found from categorical codes (see `droidoom.analysis.stats`),
and only the few fit / bootstrap groups (device x kind x mode [x population]) are looped
over in Python, never the rows.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from ..errors import DataError, UsageError
from ..schema import timed
from .blocks import visit_var
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
#: Decisions of a compared point (droidoom.analysis.blocks); the control's rows are not judged.
SAME, DIFFERENT, UNKNOWN, CONTROL = "SAME", "DIFFERENT", "UNKNOWN", "control"


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
        """DIFFERENT rows whose new/base ratio lies above max_ratio."""
        return self.table[self.table["regression"]]

    @property
    def improvements(self) -> pd.DataFrame:
        """DIFFERENT rows whose new/base ratio lies below 1 / max_ratio."""
        return self.table[self.table["improvement"]]

    @property
    def thin(self) -> pd.DataFrame:
        """Rows with too few writes on a side to be judged (a run cut short)."""
        return self.table[self.table["thin"]] if "thin" in self.table else self.table.iloc[:0]

    @property
    def unknown(self) -> pd.DataFrame:
        """Judged rows that are neither SAME nor DIFFERENT: more blocks needed."""
        return self.table[self.table["decision"] == UNKNOWN]

    @property
    def has_regression(self) -> bool:
        return bool(self.table["regression"].any()) or not self.slope_regressions.empty

    def detectable(self) -> dict[object, float]:
        """Per population (or "all" when pooled): the smallest change the judged rows of it
        could all have detected, as a ratio (the largest MDE among them; inf: none)."""
        t = self.table[self.table["decision"] != CONTROL]
        if "kind" in t.columns:  # a thin control is UNKNOWN, still not a judged point
            t = t[t["kind"].astype(str) != CONTROL_KIND]
        if t.empty:
            return {}
        if "population" not in t.columns:
            return {"all": float(t["mde"].max())}
        mdes = t.groupby("population")["mde"].max()
        return {int(cast(int, k)): float(v) for k, v in mdes.items()}


def compare(
    base: pd.DataFrame,
    new: pd.DataFrame,
    max_ratio: float = 1.10,
    *,
    by: Sequence[str] = GROUP_KEYS,
    pair_devices: bool = False,
    n_boot: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
    min_writes: int = MIN_COMPARED_WRITES,
    disturbed: Collection[str] = (),
) -> Comparison:
    """Per group present in both sides: SAME, DIFFERENT or UNKNOWN, the new/base ratio with
    a bootstrap CI, and the smallest change the data could have shown (``mde``).

    The unit of replication is the block (droidoom.analysis.blocks): each block's median is one
    observation, so the CI widens with between-block variance and narrows with more blocks
    (longer runs, or several runs pooled per side). A point is DIFFERENT when the smaller p
    of a KS and a Mann-Whitney U test on the block medians is <= blockstats.ALPHA, the
    ratio lies beyond `max_ratio` (``regression`` above it, ``improvement`` below its
    inverse) and its CI excludes 1 (clustered by run when a side pools runs); SAME when
    ``mde`` <= `max_ratio`; else UNKNOWN (``why`` says: too few writes, a disturbed run,
    or too few / too noisy blocks). What a kernel change changes is
    compared, not how fast the machine was: a kind's blocks are taken relative to the
    `CONTROL_KIND` blocks of the same point of its own run (``basis`` "vs single"; groups
    without a control compare raw, ``basis`` "raw"; ``raw_ratio`` is the raw ratio of write
    medians). The control's own rows are shown, never judged (decision "control"). Runs
    named in `disturbed` (run_id: another job ran on the target) make their points UNKNOWN.
    ``slopes`` compares ns/process per kind (`compare_slopes`); a slope regression counts
    in ``has_regression`` too. Devices match by name; `pair_devices=True` matches a
    single-device `base` with a single-device `new` of another name. `by` may drop
    "population" to pool each kind's writes. Raises DataError when no group overlaps.
    """
    from . import blocks as blockstats

    if not max_ratio > 1:
        raise UsageError(f"max_ratio must be > 1 (e.g. 1.10 for +10%), got {max_ratio}")
    by = list(by)
    new, paired = _pair(base, new) if pair_devices else (new, None)
    bg, ng = sort_groups(base, by), sort_groups(new, by)
    both = _overlap(bg, ng, by, base, new, pair_devices)
    rng = np.random.default_rng(seed)
    blocks = _Blocks(blockstats.block_table(base, by), by), _Blocks(
        blockstats.block_table(new, by), by)
    keys = bg.keys.iloc[both["_b"].to_numpy()].reset_index(drop=True)
    rows = []
    for r, (i, j) in enumerate(zip(both["_b"], both["_n"], strict=True)):
        key = tuple(str(keys[k].iloc[r]) for k in by)
        rows.append(_compare_one(bg.values(i), ng.values(j), key, by, blocks, disturbed,
                                 (n_boot, confidence, max_ratio, min_writes), rng))  # fmt: skip
    table = pd.concat([keys, pd.DataFrame(rows, columns=_ROW_COLUMNS)], axis=1)
    table["regression"] = (table["decision"] == DIFFERENT) & (table["ratio"] > max_ratio)
    table["improvement"] = (table["decision"] == DIFFERENT) & (table["ratio"] < 1 / max_ratio)
    slopes = compare_slopes(base, new) if "population" in base.columns else None
    return Comparison(table.reset_index(drop=True), max_ratio, confidence, paired, slopes)


_ROW_COLUMNS = ["base_count", "new_count", "base_median_ns", "new_median_ns", "ratio", "ci_low",
                "ci_high", "raw_ratio", "basis", "base_blocks", "new_blocks", "p_value", "mde",
                "thin", "disturbed", "decision", "why"]  # fmt: skip


class _Blocks:
    """One side's block medians, looked up by group key (`by`, as str) and by control key
    (`by` without kind)."""

    def __init__(self, table: pd.DataFrame, by: list[str]) -> None:
        self.by = by
        #: group key -> (block medians, each block's run_id)
        self.groups: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]] = {}
        #: group key -> how many visits (run, sweep point) its blocks come from
        self.visits: dict[tuple[str, ...], int] = {}
        #: the group key without population -> variance of a visit's log level with time
        self.moves: dict[tuple[str, ...], float] = {}
        if table.empty:
            return
        found: dict[tuple[str, ...], list[float]] = {}
        for key, g in table.groupby([table[k].astype(str) for k in by], sort=False):
            k = tuple(map(str, key if isinstance(key, tuple) else (key,)))
            med, runs = g["median_ns"].to_numpy(np.float64), g["run_id"].astype(str).to_numpy()
            visits = g["visit"].to_numpy(np.int64)
            self.groups[k] = (med, runs)
            self.visits[k] = len(set(zip(runs.tolist(), visits.tolist(), strict=True)))
            if "population" in by:
                v = visit_var(np.log(np.maximum(med, 1.0)), runs, visits)
                if v is not None:
                    found.setdefault(self._kind_key(k), []).append(v)
        self.moves = {k: float(np.mean(v)) for k, v in found.items()}

    def _kind_key(self, key: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(v for name, v in zip(self.by, key, strict=True) if name != "population")

    def time_var(self, key: tuple[str, ...]) -> float:
        """The variance a group's level has with time (from the points its kind visited
        twice) over the visits its blocks come from; 0 when no point was visited twice."""
        move = self.moves.get(self._kind_key(key), 0.0)
        return move / max(self.visits.get(key, 1), 1)

    def of(self, key: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        return self.groups.get(key, (np.zeros(0), np.zeros(0, dtype=str)))

    def control(self, key: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray] | None:
        """The control kind's blocks (and their runs) at the point of `key` (None: none)."""
        if "kind" not in self.by:
            return None
        ck = tuple(CONTROL_KIND if k == "kind" else v for k, v in zip(self.by, key, strict=True))
        found = self.groups.get(ck)
        return found if found is not None and len(found[0]) else None


def _compare_one(
    b: np.ndarray,
    n: np.ndarray,
    key: tuple[str, ...],
    by: list[str],
    blocks: tuple[_Blocks, _Blocks],
    disturbed: Collection[str],
    args: tuple[int, float, float, int],
    rng: np.random.Generator,
) -> list[Any]:
    """One group: write counts and medians (`b`, `n`: its timed writes), the block-level
    decision (relative to the control at the same point when both sides have one)."""
    from . import blocks as blockstats

    n_boot, confidence, max_ratio, min_writes = args
    bm, nm = float(np.median(b)), float(np.median(n))
    (bb, bruns), (nb, nruns) = blocks[0].of(key), blocks[1].of(key)
    is_control = "kind" in by and key[by.index("kind")] == CONTROL_KIND
    cb, cn = blocks[0].control(key), blocks[1].control(key)
    relative = not is_control and cb is not None and cn is not None
    controls, runs = None, [bruns, nruns]
    if relative and cb is not None and cn is not None:
        controls, runs = (cb[0], cn[0]), [bruns, nruns, cb[1], cn[1]]
    # the time-level spread: a point visited once (the sweep's top) shares one stretch of
    # time, so its blocks alone made two runs of one kernel "DIFFERENT" (x1.14, CI 1.14..1.15)
    moves = blocks[0].time_var(key) + blocks[1].time_var(key)
    d = blockstats.decide(bb, nb, controls, runs=runs, confidence=confidence, n_boot=n_boot,
                          rng=rng, time_var=moves)  # fmt: skip
    thin = len(b) < min_writes or len(n) < min_writes
    hit = bool((set(bruns) | set(nruns)) & set(disturbed))
    decision, why = d.decision(max_ratio), ""
    if thin or hit:  # the control too: the points divided by it stand on it
        decision, why = UNKNOWN, "too few writes" if thin else "disturbed"
    elif is_control:
        decision = CONTROL
    elif decision == UNKNOWN:
        few = min(d.base_blocks, d.new_blocks) < blockstats.MIN_BLOCKS or not np.isfinite(d.mde)
        why = "too few blocks" if few else "too noisy"
    basis = f"vs {CONTROL_KIND}" if relative else "raw"
    return [len(b), len(n), bm, nm, d.ratio, d.ci_low, d.ci_high, nm / max(bm, 1.0), basis,
            d.base_blocks, d.new_blocks, d.p, d.mde, thin, hit, decision, why]  # fmt: skip


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
    "MIN_COMPARED_WRITES", "CONTROL_KIND", "SAME", "DIFFERENT", "UNKNOWN", "CONTROL",
]  # fmt: skip
