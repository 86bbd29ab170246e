"""Scaling fits and the per-device verdict: is the __set_oom_adj process walk there?

`fits` / `scaling` classify latency against population as O(1), O(N) or inconclusive per
device x kind x mode; `verdict` turns a device's threaded fit (the regression) and its
multiprocess fit (the in-run positive control: the kernel must still walk for it) into
fixed / regressed / inconclusive, and cross-checks the result against the kernel release
(`droidoom.analysis.kernels`). Re-exported by `droidoom.analysis`.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..vocab import Complexity, VerdictStatus
from .drift import disturbances, drift
from .kernels import kernel_expectation, kernel_note
from .stats import point_medians

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

# Relative verdict: the multiprocess target is walked on every kernel, so its slope is what a
# walk costs on *this* machine, measured in the same run. Threaded writes walk exactly like it
# on a pre-fix kernel (both visit every process) and not at all on a fixed one.
#: "fixed" when the threaded CI's high slope stays below this share of the control's slope ...
FIXED_MAX_SHARE = 0.25
#: ... "regressed" when the threaded CI's low slope exceeds this share of it.
REGRESSED_MIN_SHARE = 0.5
#: When the CI cannot decide, point estimates may, if the control's latency grew at least
#: this much over the sweep (x5): far beyond what host load does to one block of writes.
WALK_MIN_GROWTH = 4.0


def _metas_by_device(
    meta: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None,
) -> dict[str, Mapping[str, Any]]:
    if meta is None:
        return {}
    metas = [meta] if isinstance(meta, Mapping) else list(meta)
    metas = [getattr(m, "meta", m) for m in metas]  # store.RunInfo works too
    return {str(m.get("device")): m for m in metas}


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
    complexity: Complexity
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


def _classify(
    slope: float, lo: float, hi: float, base: float, span: float
) -> tuple[Complexity, str]:
    growth, g_lo, g_hi = (s * span / base for s in (slope, lo, hi))
    pct = f"{growth:+.0%} over the sweep"
    if lo > 0 and g_lo >= ON_MIN_GROWTH:
        return Complexity.ON, f"{pct}; even the CI's low slope doubles the latency"
    if lo >= WALK_MIN_SLOPE_NS:
        walk = f"{pct}; the CI's low slope is walk-sized (>= {WALK_MIN_SLOPE_NS:g} ns)"
        return Complexity.ON, walk
    if abs(growth) <= O1_MAX_GROWTH and g_hi < ON_MIN_GROWTH and hi < WALK_MIN_SLOPE_NS:
        return Complexity.O1, f"{pct} (<= {O1_MAX_GROWTH:.0%}); the CI excludes doubling and a walk"
    return Complexity.INCONCLUSIVE, f"{pct}; CI allows {g_lo:+.0%}..{g_hi:+.0%}"


def _fit_one(key: tuple[Hashable, ...], pts: pd.DataFrame) -> Fit:
    x = pts["population"].to_numpy(dtype=float)
    y = pts["median_ns"].to_numpy(dtype=float)
    x, y = x[np.isfinite(y)], y[np.isfinite(y)]
    n_pop, nan = len(np.unique(x)), float("nan")
    slope = intercept = lo = hi = r2 = growth = nan
    span = float(np.ptp(x)) if len(x) else 0.0
    # what was measured at the smallest population: the base when the fit's is unusable
    base = float(np.median(y[x == x.min()])) if len(x) else nan
    if n_pop < MIN_POPULATIONS:
        complexity = Complexity.INCONCLUSIVE
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
    device, kind, mode = map(str, key)
    return Fit(
        device, kind, mode, slope, lo, hi, intercept, base, growth, r2, len(y), n_pop,
        pop_min, pop_max, complexity, reason,
    )  # fmt: skip


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

@dataclass(frozen=True)
class Verdict:
    """Per-device conclusion; ``sentence`` is a one-liner for the CLI."""

    device: str
    status: VerdictStatus
    mode: str
    threaded: Fit | None
    multiprocess: Fit | None
    control_ok: bool  # multiprocess (positive control) is O(N)
    kernel_release: str | None
    expectation: str  # kernel_expectation(kernel_release)
    consistent: bool | None  # behaviour agrees with the version; None = cannot tell
    sentence: str = field(default="")
    single: Fit | None = None  # negative control: single-threaded writes never walk
    #: the host interfered: the negative control grew, or the positive control's slope is
    #: walk-sized yet its CI is too wide to confirm it (load during part of the sweep)
    disturbed: bool = False
    #: what else ran on the target meanwhile (drift.disturbances: other droidoom runs, a
    #: moving process count, a high load); the sentence says "disturbed" with these
    busy: tuple[str, ...] = ()


def _walk_share(t: Fit | None, m: Fit) -> str | None:
    """"walks" / "flat" when threaded's slope sits clearly above / below a share of the
    in-run multiprocess slope (the walk's cost here), None when it is in between or unfit.

    First by the CI. With three populations Theil-Sen's CI spans every pairwise slope, so
    one block of writes slowed by a burst of host load (seen up to ~2x under TCG on a busy
    host) widens it past any decision; then the point estimates decide when they are far
    apart: a walk multiplies latency many times over the sweep, a burst at most doubles it.
    """
    if t is None or not np.isfinite(t.slope_ns) or not m.slope_ns > 0:
        return None
    if t.ci_high < FIXED_MAX_SHARE * m.slope_ns:
        return "flat"
    if t.ci_low > REGRESSED_MIN_SHARE * m.slope_ns and t.ci_low > 0:
        return "walks"
    if m.growth >= WALK_MIN_GROWTH:  # the control shows a walk far beyond any burst
        share = t.slope_ns / m.slope_ns
        if share <= FIXED_MAX_SHARE / 2 and t.growth < ON_MIN_GROWTH:
            return "flat"
        if share >= REGRESSED_MIN_SHARE and t.growth >= WALK_MIN_GROWTH / 2:
            return "walks"
    return None


def _verdict_one(
    device: str, mode: str, t: Fit | None, m: Fit | None, s: Fit | None, release: str | None,
    kinds_flag: str = "--kinds",
) -> Verdict:
    control_ok = m is not None and m.complexity == Complexity.ON
    walk_ns = m.slope_ns if m is not None else float("nan")  # the control's ns/process
    disturbed = _disturbed(s, walk_ns if control_ok else None)
    # The control walks (its slope is walk-sized) yet its CI fails: a block of writes was
    # slowed by load. Say so instead of blaming the populations or the kernel.
    noisy = (
        m is not None
        and not control_ok
        and m.n_populations >= MIN_POPULATIONS
        and m.slope_ns >= WALK_MIN_SLOPE_NS
    )
    share = _walk_share(t, m) if m is not None and control_ok else None
    status, first = _threaded_finding(t, share, control_ok, walk_ns)
    second = _control_finding(m, control_ok, noisy, kinds_flag)
    if disturbed and s is not None:
        status = VerdictStatus.INCONCLUSIVE
        first = (
            f"single-threaded writes, which never walk, changed {s.growth:+.0%} over the sweep "
            f"({s.slope_text()}): the device was busy while the population grew, re-run it "
            "quiet; " + first
        )
    disturbed = disturbed or noisy
    both_flat = all(f is not None and f.complexity == Complexity.O1 for f in (t, m))
    consistent, third = kernel_note(status, release, both_flat)
    return Verdict(
        device, status, mode, t, m, control_ok, release, kernel_expectation(release),
        consistent, f"{first}; {second}; {third}", s, disturbed,
    )  # fmt: skip


def _disturbed(s: Fit | None, walk_ns: float | None) -> bool:
    """Single-threaded writes skip the walk on every kernel: when they grow with the
    population too, something else did (CPU contention, another writer holding the global
    oom_adj_mutex, a busy phone), and neither a flat nor a rising threaded curve is evidence.
    A change beyond O(1)'s tolerance is enough (CI-free): the control only has to be flat.
    `walk_ns`: the walking control's ns/process (None when the control does not walk)."""
    disturbed = s is not None and (
        s.complexity == Complexity.ON or (np.isfinite(s.growth) and abs(s.growth) > O1_MAX_GROWTH)
    )
    if disturbed and s is not None and walk_ns is not None:
        # the drift is small next to what a walk costs here: it cannot fake or hide one
        disturbed = not abs(s.slope_ns) < FIXED_MAX_SHARE * walk_ns
    return disturbed


def _threaded_finding(
    t: Fit | None, share: str | None, control_ok: bool, walk_ns: float
) -> tuple[VerdictStatus, str]:
    """The status the threaded fit supports and the sentence that says why."""
    status = VerdictStatus.INCONCLUSIVE
    if t is not None and share == "walks":
        status = VerdictStatus.REGRESSED
        first = (
            f"threaded writes are O(N), walking like the multiprocess control ({t.slope_text()} vs "
            f"{_num(walk_ns, sign=True)}): every multi-threaded app pays the __set_oom_adj "
            "process walk (the 2020 regression)"
        )
    elif t is not None and share == "flat":
        status = VerdictStatus.FIXED
        first = (
            f"threaded writes are O(1) next to the walking multiprocess control "
            f"({t.slope_text()}, below {FIXED_MAX_SHARE:.0%} of "
            f"{_num(walk_ns, sign=True)}): this kernel carries the MMF_MULTIPROCESS fix"
        )
    elif t is None:
        first = "no threaded writes in this run"
    elif t.complexity == Complexity.ON:
        status = VerdictStatus.REGRESSED
        first = (
            f"threaded writes are O(N) ({t.slope_text()}): every multi-threaded app pays the "
            "__set_oom_adj process walk (the 2020 regression)"
        )
    elif t.complexity == Complexity.O1 and control_ok:
        status = VerdictStatus.FIXED
        first = f"threaded writes are O(1) ({t.slope_text()}): this kernel carries the "
        first += "MMF_MULTIPROCESS fix"
    elif t.complexity == Complexity.O1:
        first = f"threaded writes are O(1) ({t.slope_text()}) but without a working control"
    else:
        first = f"threaded writes are inconclusive ({t.slope_text()}; {t.reason})"
        if t.n_populations < MIN_POPULATIONS:
            first = f"threaded writes cannot be fitted ({t.reason})"
    return status, first


def _control_finding(m: Fit | None, control_ok: bool, noisy: bool, kinds_flag: str) -> str:
    """What the multiprocess fit (the positive control) shows about this run."""
    if m is None:
        second = (
            f"no multiprocess writes (left out of {kinds_flag}, or not spawnable here, e.g. under "
            "qemu-user), so no positive "
            "control: the run cannot show that the walk is measurable here"
        )
    elif m.n_populations < MIN_POPULATIONS:
        second = f"multiprocess cannot be fitted either ({m.reason}), so no positive control"
    elif control_ok:
        second = f"multiprocess {_num(m.slope_ns, sign=True)} ns/process confirms the walk is "
        second += "measurable here"
    elif noisy:
        second = (
            f"multiprocess walks ({m.slope_text()}) but too unevenly to confirm it: the device "
            "was busy during part of the sweep; re-run it quiet (or with more --writes)"
        )
    else:
        second = (
            f"multiprocess is {m.complexity} ({m.slope_text()}), so this run could not show "
            f"the walk (populations up to {m.pop_max} too small, or a kernel without the walk)"
        )
    return second


def verdict(
    df: pd.DataFrame,
    meta: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None,
    *,
    mode: str | None = None,
    fitted: Sequence[Fit] | None = None,
) -> list[Verdict]:
    """Fixed / regressed / inconclusive per device, with evidence and a version cross-check.

    The test is relative first: with a walking multiprocess control (slope m, the cost of a
    walk on this machine in this run), "fixed" when threaded's 95% CI high slope is below
    `FIXED_MAX_SHARE` x m, "regressed" when its CI low slope is above `REGRESSED_MIN_SHARE` x
    m. Otherwise the absolute classification decides:
    "regressed": threaded writes are O(N). "fixed": threaded writes are O(1) *and* the
    multiprocess target (which the kernel must still walk) is O(N) - without that positive
    control a flat threaded curve may only mean the populations were too small, so the
    verdict is "inconclusive". So is it when single-threaded writes, which never walk (the
    negative control), change by more than `O1_MAX_GROWTH` over the sweep *and* by more than
    `FIXED_MAX_SHARE` x m per process: then the host was disturbed while the population grew
    (``disturbed``); ``disturbed`` too when the multiprocess slope is walk-sized but its CI
    fails (load slowed part of the sweep).
    `meta` is one run.json dict or several (matched by "device");
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
        t, mp, single = (by_kind.get(k) for k in ("threaded", "multiprocess", "single"))
        replay = str((m.get("spec") or {}).get("scenario", "")).startswith("replay")
        flag = "--replay-kinds" if replay else "--kinds"  # the option that left a kind out
        v = _verdict_one(device, use, t, mp, single, release, flag)
        if busy := disturbances(m):  # other work on the target: its numbers are suspect
            v = replace(v, busy=tuple(busy),
                        sentence=f"{v.sentence} Disturbed: {'; '.join(busy)}; re-run it quiet.")
        # drift over time (droidoom/analysis/drift.py) joins the sentence; needs the samples
        if df is not None and "device" in df.columns:
            note = drift(df[df["device"].astype(str) == device], m).text()
            v = replace(v, sentence=f"{v.sentence} {note}.") if note else v
        out.append(v)
    return out
