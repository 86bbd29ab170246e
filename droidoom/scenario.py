"""Role-change scenarios: ActivityManager adj levels -> a write schedule for the helper.

Policy lives here, in Python; the helper only executes the plan it is handed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from .errors import UsageError
from .protocol import PlanPoint, PlanTarget
from .spec import ProfileSpec

# ActivityManager adj levels the scenario moves apps between (frameworks/base ProcessList.java).
FOREGROUND_APP = 0
VISIBLE_APP = 100
PERCEPTIBLE_APP = 200
SERVICE = 500
PREVIOUS = 700
CACHED_APP_MIN = 900
CACHED_APP_MAX = 999

#: Role names as stored in the `role` column; the code is the list index (helper's u8).
ROLES: tuple[str, ...] = (
    "foreground",  # launch or return to the app
    "visible",  # activity visible behind another
    "perceptible",  # playing audio, bound by a foreground app
    "service",  # started service
    "previous",  # the app the user just left
    "cached",  # aged into the cache (900..999)
    "alternate-a",  # `alternate` scenario, first level
    "alternate-b",  # `alternate` scenario, second level
    "persistent",  # replay: adj < 0 (system, persistent processes)
    "other",  # replay: 300..499 (backup, heavy weight)
    "home",  # replay: 600..699
    "service-b",  # replay: 800..899 (old services)
)
ROLE_CODE = {name: i for i, name in enumerate(ROLES)}

_ROLE_ADJ = {
    "foreground": FOREGROUND_APP,
    "visible": VISIBLE_APP,
    "perceptible": PERCEPTIBLE_APP,
    "service": SERVICE,
    "previous": PREVIOUS,
    "cached": CACHED_APP_MIN,
}

# Where an app goes next, with weights: a coarse model of what ActivityManager does
# (launch, leave, age in the cache, start a service, play audio, become visible).
_TRANSITIONS: dict[str, tuple[tuple[str, int], ...]] = {
    "foreground": (("previous", 6), ("visible", 2), ("perceptible", 2)),
    "visible": (("foreground", 3), ("previous", 7)),
    "perceptible": (("foreground", 3), ("service", 3), ("previous", 4)),
    "service": (("cached", 5), ("perceptible", 2), ("foreground", 3)),
    "previous": (("cached", 7), ("foreground", 3)),
    "cached": (("cached", 6), ("foreground", 4)),
}

_CACHED_STEP = 10  # each aging step pushes a cached app further down the LRU


#: (target index, adj, role code): one write of a point.
Move = tuple[int, int, int]


@dataclass(frozen=True)
class Plan:
    """The helper's input plus what the host needs to label its records."""

    targets: tuple[PlanTarget, ...]
    points: tuple[PlanPoint, ...]
    clamped: int  # writes raised to adj_min because this user may not go lower
    adj_min: int
    writer: tuple[int, bool] = (-1, False)  # (cpu, fifo) for the plan's `writer` line
    info: dict[str, Any] = field(default_factory=dict)  # run.json extras (e.g. the trace)
    notes: tuple[str, ...] = ()  # what the user should know about this plan
    measure: str = "adj"  # "kill": targets are victim templates, each write one kill


@dataclass
class Chain:
    """Where one app is in the lmkd role model: its role and adj (advanced by lmkd_moves)."""

    role: str = "cached"
    adj: int = CACHED_APP_MIN


def lmkd_moves(rng: random.Random, n: int, chain: Chain) -> list[tuple[int, int]]:
    """n (adj, role code) moves continuing `chain` (which ends where the moves end)."""
    role, adj = chain.role, chain.adj
    out = []
    for _ in range(n):
        names, weights = zip(*_TRANSITIONS[role], strict=True)
        nxt = rng.choices(names, weights)[0]
        if nxt == "cached":
            adj = min(adj + _CACHED_STEP, CACHED_APP_MAX) if role == "cached" else CACHED_APP_MIN
        else:
            adj = _ROLE_ADJ[nxt]
        role = nxt
        out.append((adj, ROLE_CODE[role]))
    chain.role, chain.adj = role, adj
    return out


def _alternate_moves(levels: tuple[int, int], n: int, start: int) -> list[tuple[int, int]]:
    codes = (ROLE_CODE["alternate-a"], ROLE_CODE["alternate-b"])
    return [(levels[(start + i) % 2], codes[(start + i) % 2]) for i in range(n)]


def sweep(spec: ProfileSpec) -> list[tuple[int, int]]:
    """(population, timed writes per kind) per visit, in run order.

    `updown` (default) climbs the sorted populations and comes back down without
    repeating the top: every population but the largest is visited twice, half its
    writes on the way up and half on the way down, so the population only grows once and
    a drift in time (DVFS, thermal, battery) cancels in each population's pooled data
    and shows as the gap between its two visits instead of masquerading as O(N).
    `ascending` is the old single climb.
    """
    pops = sorted(spec.populations)
    if spec.order == "ascending" or len(pops) < 2 or spec.writes < 2:
        return [(p, spec.writes) for p in pops]
    down = spec.writes // 2
    up = [(p, spec.writes - down) for p in pops[:-1]] + [(pops[-1], spec.writes)]
    return up + [(p, down) for p in reversed(pops[:-1])]


def build_plan(spec: ProfileSpec, adj_min: int = -1000) -> Plan:
    """Turn a spec into targets and points. Deterministic for a given spec.

    Points follow `sweep()`; within a point the kinds take turns write by write
    (round robin), so a slow drift touches every kind alike. Moves below `adj_min` (what
    this user may write) are raised to it and counted. `replay:TRACE` scenarios are
    built by `droidoom.traces.replay.build_replay_plan` (`droidoom.run.plans.build_plan` picks).
    """
    if spec.scenario.startswith("replay:"):
        raise UsageError("replay:TRACE plans come from droidoom.run.plans.build_plan")
    targets = tuple(
        PlanTarget(i, kind, spec.target_threads if kind == "threaded" else 1)
        for i, kind in enumerate(spec.kinds)
    )
    chains = {t.idx: Chain() for t in targets}
    rngs = {t.idx: random.Random(spec.seed * 1009 + t.idx) for t in targets}
    points, clamped, idx = [], 0, 0
    for population, n in sweep(spec):
        for mode in spec.modes:
            per_target = []
            for t in targets:
                if spec.scenario == "alternate":
                    moves = _alternate_moves(spec.levels, n, idx)
                else:
                    moves = lmkd_moves(rngs[t.idx], n, chains[t.idx])
                per_target.append([(t.idx, adj, role) for adj, role in moves])
            writes = []
            for tidx, adj, role in in_blocks(per_target, spec.block):
                if adj < adj_min:
                    adj, clamped = adj_min, clamped + 1
                writes.append((tidx, adj, role))
            points.append(
                PlanPoint(
                    idx, population, spec.threads, mode, spec.rate, spec.warmup, tuple(writes)
                )
            )
            idx += 1
    return Plan(targets, tuple(points), clamped, adj_min, (spec.cpu, spec.fifo),
                info={"blocks": block_layout(spec)})  # fmt: skip


def build_kill_plan(spec: ProfileSpec) -> Plan:
    """A kill plan (`--measure kill`): one victim template per kind, and per sweep point
    `spec.writes` kills of each kind, in the same sweep order and blocks as writes.

    Each kill is one `k` line: the helper forks a fresh victim of that kind (before its
    clock starts) and kills it as lmkd does. The role is `cached`: lmkd kills from the
    cache first. Victims live one at a time, so warm-up kills make no sense (warmup 0).
    """
    targets = tuple(
        PlanTarget(i, kind, spec.target_threads if kind == "threaded" else 1, spec.victim_rss)
        for i, kind in enumerate(spec.kinds)
    )
    role = ROLE_CODE["cached"]
    points = []
    for idx, (population, n) in enumerate(sweep(spec)):
        per_target = [[(t.idx, 0, role)] * n for t in targets]
        writes = tuple(in_blocks(per_target, spec.block))
        points.append(PlanPoint(idx, population, spec.threads, "reopen", spec.rate, 0, writes))
    info = {"measure": "kill", "blocks": block_layout(spec),
            "kill": {"victim_rss_kb": spec.victim_rss, "race": KILL_RACE}}  # fmt: skip
    return Plan(targets, tuple(points), 0, -1000, (spec.cpu, spec.fifo), info=info,
                measure="kill")  # fmt: skip


#: How a kill plan keeps the victim's threads from exiting before process_mrelease (run.json).
KILL_RACE = (
    "victim pinned to the killer's CPU at SCHED_IDLE (its threads inherit both); the killer "
    "runs SCHED_FIFO there when permitted, so no victim thread runs between the kill and "
    "process_mrelease; the victim's Threads is read just before the call (shared = mm_users > 1)"
)


def in_blocks(per_target: list[list[Move]], block: int) -> list[Move]:
    """One point's writes: each target's moves cut into blocks of `block`, the targets
    taking turns block by block. The order of the turns changes every round, ABBA-style
    (ABC, CBA, BCA, ACB, CAB, BAC, ...): each target goes first, middle and last alike, so a
    drift in time touches every kind alike. `block` 1 is the old write-by-write round robin."""
    rounds = max((len(m) + block - 1) // block for m in per_target) if per_target else 0
    order = list(range(len(per_target)))
    out: list[Move] = []
    for r in range(rounds):
        k = 0 if block == 1 else r // 2 % len(order)
        turn = order[k:] + order[:k]
        for t in turn if r % 2 == 0 or block == 1 else reversed(turn):
            out.extend(per_target[t][r * block : (r + 1) * block])
    return out


def warmup_flags(plan: Plan) -> list[bool]:
    """Per write of the plan, in seq order: is it one of the first `settle` writes after a
    switch of target (or a point's start, after the helper's untimed warm-up of every
    target)? Such a write pays for the caches the previous kind's writes left behind."""
    settle = int((plan.info.get("blocks") or {}).get("settle", 0))
    flags: list[bool] = []
    for p in plan.points:
        prev, since = -1, 0
        for tidx, _adj, _role in p.writes:
            since = since + 1 if tidx == prev else 0
            prev = tidx
            flags.append(since < settle)
    return flags


def block_layout(spec: ProfileSpec) -> dict[str, Any]:
    """run.json's record of how the kinds took turns."""
    if spec.block == 1:
        return {"block": 1, "settle": 0, "order": "round robin, write by write"}
    return {"block": spec.block, "settle": spec.settle,
            "order": "blocks per kind, turn order rotated ABBA-style each round"}  # fmt: skip
