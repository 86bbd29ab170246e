"""How long a plan may take: the paced part is known exactly, the rest is allowed for.

A VM's watchdog (droidoom/lab/qemu.py) used to be a fixed 900 s from boot: a run paced
by --rate, or a replay at its trace's pace, was killed mid-way with nothing saved. A
run's limit now follows its plan: the time its writes are paced over (rate, a replay's
gaps) counted twice, plus a generous allowance per write and per spawned process for
what is not paced (back-to-back writes and spawning under TCG), plus a fixed margin
for setup. Stuck helpers are caught sooner anyway: the runner gives up after
runner.LINE_TIMEOUT seconds without a line.
"""

from __future__ import annotations

from ..protocol import PlanPoint
from ..scenario import Plan

#: Seconds allowed per write (and per warm-up write) that is not paced: a reopen write
#: under TCG takes well under 1 ms; a kill (spawn, kill, reap a victim) a few ms.
PER_WRITE_S = 0.005
PER_KILL_S = 0.05
#: Seconds allowed per population thread spawned (TCG: ~1-5 ms per clone; x up and down).
PER_THREAD_S = 0.02
#: Fixed margin: starting the helper, its targets, pulling the records.
SETUP_S = 600.0
#: The paced part may run this many times slower than planned (a loaded host).
PACE_MARGIN = 2.0


def paced_seconds(point: PlanPoint) -> float:
    """Seconds the helper spends waiting between `point`'s writes: a replay's gaps, or
    its writes at `rate_hz` (0 = back to back: nothing paced)."""
    if point.gaps_us is not None:
        return sum(point.gaps_us) / 1e6
    if point.rate_hz > 0:
        return len(point.writes) / point.rate_hz
    return 0.0


def planned_seconds(plan: Plan) -> float:
    """Seconds `plan`'s pacing alone takes (the least the run can last)."""
    return sum(paced_seconds(p) for p in plan.points)


def life_seconds(plan: Plan) -> float:
    """Seconds a VM must be allowed for `plan`: always more than `planned_seconds`."""
    per_write = PER_KILL_S if plan.measure == "kill" else PER_WRITE_S
    writes = sum(len(p.writes) + p.warmup * len(plan.targets) for p in plan.points)
    threads = sum(p.population * max(p.threads, 1) for p in plan.points)
    return (
        SETUP_S
        + PACE_MARGIN * planned_seconds(plan)
        + per_write * writes
        + PER_THREAD_S * threads * 2  # spawned, then reaped
    )
