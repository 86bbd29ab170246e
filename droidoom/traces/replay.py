"""Trace replay: a phone's real oom_score_adj changes as a helper plan (`--scenario replay:TRACE`).

A Perfetto trace (or ftrace/atrace text) records every `oom_score_adj_update` lmkd made:
target pid, new adj, time. `load` turns it into a `ReplayTrace`: the replayed processes
(one helper target each, per kind), their writes in trace order with the gaps between
them, and how many processes were alive at each write. `build_replay_plan` makes the
helper plan: for each population visit (with several populations and `--order updown`,
the default: up and back down, each twice) and mode one point that replays the whole trace, each
trace event becoming one timed write per kind (to that process's target of that kind),
the first carrying the event's gap (`w ... gap_us`, time divided by `compress`).

Processes alive at a write: a process is alive from its first sighting (the process list,
or its first update) until its `sched_process_free` event (or the end of the trace). The
population a replay spawns is the writes' mean of that count minus the replayed processes
themselves (`population_of`): the extra processes the trace's writes saw on average.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import DataError, UsageError
from ..protocol import PlanPoint, PlanTarget
from ..scenario import ROLE_CODE, Chain, Plan, lmkd_moves
from ..spec import ProfileSpec
from .perfetto import TraceData, read_any, read_bytes, require_oom_events

#: (target idx, adj, role code) per write, as in PlanPoint.writes.
Writes = tuple[tuple[int, int, int], ...]

PREFIX = "replay:"
#: The helper's target index is a u8: at most 256 targets (processes x kinds).
MAX_TARGETS = 256
#: A `w` line's gap_us is at most 2^31-1 us (~35 min): longer pauses are shortened.
MAX_GAP_US = 2**31 - 1


def trace_path(scenario: str) -> str | None:
    """The TRACE of a `replay:TRACE` scenario, None for other scenarios."""
    return scenario[len(PREFIX) :] if scenario.startswith(PREFIX) else None


def role_of(adj: int) -> str:
    """ActivityManager role name of an adj value (ProcessList.java's levels)."""
    if adj < 0:
        return "persistent"
    for hi, name in ((100, "foreground"), (200, "visible"), (300, "perceptible"),
                     (500, "other"), (600, "service"), (700, "home"), (800, "previous"),
                     (900, "service-b")):  # fmt: skip
        if adj < hi:
            return name
    return "cached"


@dataclass(frozen=True)
class ReplayTrace:
    """What a replay and a cost estimate take from one trace."""
    path: str
    sha256: str
    events: pd.DataFrame  # replayed updates, trace order: ts_ns, pid, comm, adj, alive, proc
    pids: tuple[int, ...]  # replayed processes; `proc` in events indexes this
    dropped_processes: int  # processes beyond the target cap (their updates are not replayed)
    dropped_events: int
    writer: str  # "lmkd", or "any" when the process list does not name lmkd
    has_process_list: bool
    has_exits: bool
    duration_ns: int  # first to last update
    impossible: int = 0  # updates skipped: values no kernel records (TraceData.impossible)
    impossible_note: str | None = None
    #: the trace's losses by kind (TraceData.loss_counts), and in words ("" when none)
    losses: dict[str, int] = field(default_factory=dict)
    loss_text: str = ""
    #: each replayed process's name in the trace (its process list's, else its updates'
    #: comm), as `pids`
    names: tuple[str, ...] = ()

    @property
    def lost(self) -> int:
        """Everything the trace lost (0: a complete record of its updates)."""
        return sum(self.losses.values())

    @property
    def extra(self) -> npt.NDArray[np.int64]:
        """Per replayed write: processes alive beyond the replayed ones (>= 0)."""
        alive: npt.NDArray[np.int64] = self.events["alive"].to_numpy(np.int64)
        return np.maximum(alive - len(self.pids), 0)

    def population(self) -> int:
        """Extra processes a replay spawns: the writes' mean `extra` (cost is linear in it)."""
        return int(round(float(self.extra.mean()))) if len(self.events) else 0

    def notes(self) -> list[str]:
        """What the user should know about this trace's replay."""
        out = [self.impossible_note] if self.impossible_note else []
        if self.lost:
            out.append(f"the trace lost events ({self.loss_text}): updates are missing from it, "
                       "so its writes per hour and every cost estimated from it are lower "
                       "bounds")  # fmt: skip
        if self.dropped_processes:
            out.append(
                f"the trace updates more processes than the helper's {MAX_TARGETS} targets "
                f"allow with these kinds: {self.dropped_processes} least-updated processes "
                f"({self.dropped_events} updates) are not replayed"
            )
        if self.writer == "any":
            out.append("the trace's process list does not name lmkd: every writer's updates "
                       "are replayed")  # fmt: skip
        if not self.has_process_list:
            out.append("the trace has no process list: processes alive = those seen in updates "
                       "(an undercount); give --population for the phone's real count")
        elif not self.has_exits:
            out.append("the trace has no sched/sched_process_free events: processes are taken "
                       "as alive until the end of the trace (an overcount)")
        return out

    def summary(self) -> dict[str, Any]:
        """For run.json."""
        return {
            "trace": self.path, "sha256": self.sha256, "updates": int(len(self.events)),
            "processes": len(self.pids), "dropped_processes": self.dropped_processes,
            "dropped_updates": self.dropped_events, "writer": self.writer,
            "impossible_updates": self.impossible,
            "duration_s": self.duration_ns / 1e9, "population": self.population(),
            "alive_mean": float(self.events["alive"].mean()) if len(self.events) else 0.0,
            "lost": self.lost, "losses": {k: v for k, v in self.losses.items() if v},
        }  # fmt: skip


def _alive_at(ts: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Count of [start, end) intervals holding each ts (vectorised)."""
    s, e = np.sort(starts), np.sort(ends)
    return np.searchsorted(s, ts, side="right") - np.searchsorted(e, ts, side="right")


def _lifetimes(trace: TraceData, ev: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    first = ev.groupby("pid", sort=True)["ts_ns"].min()
    procs = trace.processes
    start = pd.concat([procs.set_index("pid")["ts_ns"], first]).groupby(level=0).min()
    end = pd.Series(np.iinfo(np.int64).max, index=start.index, dtype="int64")
    if len(trace.exits):
        gone = trace.exits.groupby("pid")["ts_ns"].max()
        gone = gone[gone.index.isin(end.index)]
        end.loc[gone.index] = gone.to_numpy()
    # a process updated after its recorded exit was a reused pid: keep it alive
    last = ev.groupby("pid")["ts_ns"].max()
    end.loc[last.index] = np.maximum(end.loc[last.index].to_numpy(), last.to_numpy() + 1)
    return start.to_numpy(np.int64), end.to_numpy(np.int64)


def load(path: str | Path, n_kinds: int = 1) -> ReplayTrace:
    """Read TRACE for replay. DataError (naming what is missing) for an unreadable,
    truncated or unknown-format file or one without oom_score_adj_update events."""
    path = str(path)
    sha = hashlib.sha256(read_bytes(path)).hexdigest()
    trace = read_any(path, allow_truncated=False)
    require_oom_events(trace, path)
    ev = trace.updates_by("lmkd")
    writer = "lmkd" if trace.writer_pids("lmkd") else "any"
    ev = ev[["ts_ns", "pid", "comm", "adj"]].reset_index(drop=True)
    if ev.empty:
        raise DataError(f"{path}: lmkd made no oom_score_adj updates in this trace")
    starts, ends = _lifetimes(trace, ev)
    ev["alive"] = _alive_at(ev["ts_ns"].to_numpy(np.int64), starts, ends)
    counts = ev["pid"].value_counts(sort=False)
    cap = MAX_TARGETS // max(n_kinds, 1)
    keep = set(counts.sort_values(ascending=False, kind="stable").index[:cap])
    order = [p for p in pd.unique(ev["pid"]) if p in keep]  # first-update order
    replayed = ev[ev["pid"].isin(keep)].reset_index(drop=True)
    replayed["proc"] = replayed["pid"].map({p: i for i, p in enumerate(order)}).astype("int32")
    ts = replayed["ts_ns"].to_numpy(np.int64)
    return ReplayTrace(
        names=_names(trace, replayed, order),
        path=path, sha256=sha, events=replayed, pids=tuple(int(p) for p in order),
        dropped_processes=len(counts) - len(keep), dropped_events=len(ev) - len(replayed),
        writer=writer, has_process_list=not trace.processes.empty,
        has_exits=not trace.exits.empty,
        duration_ns=int(ts[-1] - ts[0]) if len(ts) else 0,
        losses=trace.loss_counts(), loss_text=trace.loss_text(),
        impossible=trace.impossible, impossible_note=trace.impossible_note(path),
    )  # fmt: skip


def _names(trace: TraceData, ev: pd.DataFrame, pids: list[int]) -> tuple[str, ...]:
    """Each process's name in the trace: the process list's (cmdline[0], the full package
    name) when it has one, else the comm of its last update (cut to 15 characters)."""
    procs = trace.processes
    listed = dict(zip(procs["pid"].astype(int), procs["name"].astype(str), strict=True))
    comm = ev.groupby("pid", sort=False)["comm"].last().astype(str).to_dict()
    return tuple(listed.get(p) or comm.get(p) or f"pid {p}" for p in map(int, pids))


def gaps_us(ts_ns: np.ndarray, compress: float) -> np.ndarray | None:
    """Per write: microseconds since the previous one, time divided by `compress`
    (None for 0: back to back). Rounded on the absolute schedule, so no drift."""
    if compress == 0 or len(ts_ns) == 0:
        return None
    at = np.round((ts_ns - ts_ns[0]) / (1000.0 * compress)).astype(np.int64)
    gaps: npt.NDArray[np.int64] = np.clip(np.diff(at, prepend=at[0]), 0, MAX_GAP_US)
    return gaps


def _replay_writes(rt: ReplayTrace, kinds: int, adj_min: int) -> tuple[Writes, int]:
    """The trace's updates as writes (kinds taking turns), and how many were clamped."""
    n = len(rt.pids)
    adj = rt.events["adj"].to_numpy(np.int64)
    roles = [ROLE_CODE[role_of(int(a))] for a in adj]
    proc = rt.events["proc"].to_numpy(np.int64)
    writes = tuple(
        (k * n + int(p), int(max(a, adj_min)), r)
        for p, a, r in zip(proc, adj, roles, strict=True) for k in range(kinds)
    )  # fmt: skip
    return writes, int((adj < adj_min).sum()) * kinds


def _changing_moves(rng: random.Random, count: int) -> list[tuple[int, int]]:
    """`count` lmkd-model moves of one process, each to a new value: ActivityManager sends
    lmkd an update only when a process's adj changes (OomAdjuster compares the new adj
    with the one it last set), and a write of the value already set costs more here
    (~1 us), so the model's repeats at the bottom of the cache are skipped."""
    chain, last = Chain(), None
    out: list[tuple[int, int]] = []
    while len(out) < count:
        for adj, role in lmkd_moves(rng, count - len(out), chain):
            if adj != last:
                out.append((adj, role))
            last = adj
    return out


def _sweep_writes(rt: ReplayTrace, kinds: int, adj_min: int, seed: int) -> tuple[Writes, int]:
    """A sweep point's writes: the trace's targets in the trace's order (the same access
    pattern as a play), each process's values from the lmkd role model
    (droidoom/scenario.py) instead of the trace's."""
    n = len(rt.pids)
    proc = rt.events["proc"].to_numpy(np.int64)
    rng = random.Random(seed)
    moves = [iter(_changing_moves(rng, int(c))) for c in np.bincount(proc, minlength=n)]
    out: list[tuple[int, int, int]] = []
    clamped = 0
    for j in proc:
        a, r = next(moves[j])
        clamped += (a < adj_min) * kinds
        out += [(k * n + int(j), max(a, adj_min), r) for k in range(kinds)]
    return tuple(out), clamped


def build_replay_plan(spec: ProfileSpec, adj_min: int = -1000) -> Plan:
    """The helper plan that replays spec's trace (see the module docstring)."""
    path = trace_path(spec.scenario)
    if path is None:
        raise UsageError(f"scenario {spec.scenario!r} is not replay:TRACE")
    rt = load(path, len(spec.kinds))
    n, nk = len(rt.pids), len(spec.kinds)
    targets = tuple(
        PlanTarget(k * n + j, kind, spec.target_threads if kind == "threaded" else 1)
        for k, kind in enumerate(spec.kinds) for j in range(n)
    )  # fmt: skip
    writes, clamped_per_play = _replay_writes(rt, nk, adj_min)
    g = gaps_us(rt.events["ts_ns"].to_numpy(np.int64), spec.compress)
    gaps = None if g is None else tuple(int(x) for i in g for x in (i, *([0] * (nk - 1))))
    # updown: up and back down, the top too (no respawn), so every population has two
    # replays far apart in time and drift shows in their difference (cf. scenario.sweep)
    pops = sorted(spec.populations)
    visits = pops + pops[::-1] if spec.order == "updown" and len(pops) > 1 else pops
    points: list[PlanPoint] = []
    sweep_idx: list[int] = []
    clamped = 0
    for population in visits:
        for mode in spec.modes:
            # --repeat: rounds of a sweep point and a play, in turn first (ABBA), so a
            # drift during the visit touches both alike; the visit's first point warms up
            order = [(True, False), (False, True)] * spec.repeat if spec.repeat > 1 else [
                (False,)]  # fmt: skip
            for r, is_sweep in enumerate(x for pair in order[: spec.repeat] for x in pair):
                warm = spec.warmup if r == 0 else 0
                if is_sweep:
                    sw, c = _sweep_writes(rt, nk, adj_min, spec.seed * 1009 + len(points))
                    sweep_idx.append(len(points))
                    point = PlanPoint(len(points), population, spec.threads, mode, 0.0, warm, sw)
                else:
                    point = PlanPoint(len(points), population, spec.threads, mode, 0.0, warm,
                                      writes, gaps)  # fmt: skip
                    c = clamped_per_play
                points.append(point)
                clamped += c
    notes = rt.notes()
    if g is not None and (g >= MAX_GAP_US).any():
        notes.append("pauses longer than 35 min were shortened to 35 min")
    info = {**rt.summary(), "repeat": spec.repeat, "sweep_points": sweep_idx,
            "processes": [{"pid": p, "name": nm} for p, nm in zip(rt.pids, rt.names,
                                                                  strict=True)]}  # fmt: skip
    return Plan(targets, tuple(points), clamped, adj_min, (spec.cpu, spec.fifo),
                info={"replay": info}, notes=tuple(notes))  # fmt: skip


def spec_for_replay(
    spec: ProfileSpec, *, population_given: bool, kinds_given: bool,
    replay_kinds: tuple[str, ...] | None = None, compress: float | None = None,
    repeat: int | None = None,
) -> ProfileSpec:  # fmt: skip
    """A spec adjusted for `replay:TRACE`, for every command that profiles (`profile`,
    `profile --all`, `farm run`): kinds `--replay-kinds` (else --kinds, else threaded:
    nearly every app process is multi-threaded), the population sized from the trace
    (`ReplayTrace.population`) unless given. Other scenarios: unchanged (the replay-only
    options are usage errors)."""
    path = trace_path(spec.scenario)
    if path is None:
        if replay_kinds or compress is not None or repeat is not None:
            raise UsageError("--replay-kinds, --compress and --repeat go with "
                             "--scenario replay:TRACE")  # fmt: skip
        return spec
    kinds = replay_kinds or (spec.kinds if kinds_given else ("threaded",))
    scenario = PREFIX + str(Path(path).expanduser().resolve())  # run.json names the file
    spec = replace(spec, kinds=tuple(kinds), scenario=scenario)
    spec = spec if compress is None else replace(spec, compress=compress)
    spec = spec if repeat is None else replace(spec, repeat=repeat)
    spec.validate()
    if not population_given:
        spec = replace(spec, populations=(load(path, len(kinds)).population(),))
    return spec.validate()
