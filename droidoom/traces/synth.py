"""Synthetic phone traces: realistic oom_score_adj churn written as real Perfetto traces.

A start on issue 12 ("replay a phone's real role changes"): test input for a replay
and a cost estimate, with a known ground truth. The model follows ActivityManager
(frameworks/base ProcessList.java / OomAdjuster.java):

- adj levels: FOREGROUND 0, VISIBLE 100, PERCEPTIBLE 200, SERVICE 500, PREVIOUS 700,
  SERVICE_B 800, cached 900..999;
- cached slots: OomAdjuster spreads cached processes over
  numSlots = ((CACHED_APP_MAX_ADJ - CACHED_APP_MIN_ADJ + 1) >> 1) / CACHED_APP_IMPORTANCE_LEVELS
  = 10 slots, cached-activity processes at 900, 910, ... and empty ones at 905, 915, ...
  (steps of 2 x IMPORTANCE_LEVELS), `factor` processes per slot in LRU order;
- AMS sends lmkd an update only when a process's adj changed, and lmkd writes
  /proc/<pid>/oom_score_adj from its one thread, so every event here changes its
  process's value and has lmkd as writer.

Workload (all rates are parameters, defaults a phone in active use):

- launch storms: an app comes to the foreground (0) every `launch_every_s` on average
  (exponential gaps); the previous foreground app goes to PREVIOUS (700), the one before
  becomes cached; 0-3 of the app's bound services/providers move to VISIBLE/PERCEPTIBLE;
  then every cached process whose LRU slot moved gets a new cached adj (cached aging).
  One launch's writes are 20-200 us apart, like lmkd applying a batch.
- service churn: every `service_every_s`, a cached app starts a service (500), or a
  service app stops (back to cached) or ages to SERVICE_B (800).
- cached processes beyond `max_cached` are killed: no more updates, and a
  `sched_process_free` event (what the kernel emits when the process is gone), so a
  reader can tell which processes were alive at each write (ground truth: `alive`).

The process list is a `process_tree` at the start (init, lmkd, `system_processes`
daemons, the running apps) plus one `process_tree` packet per app started later.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import pandas as pd

CACHED_MIN, CACHED_MAX, IMPORTANCE_LEVELS = 900, 999, 5
NUM_SLOTS = ((CACHED_MAX - CACHED_MIN + 1) >> 1) // IMPORTANCE_LEVELS  # 10
FOREGROUND, VISIBLE, PERCEPTIBLE, SERVICE, PREVIOUS, SERVICE_B = 0, 100, 200, 500, 700, 800
LMKD_PID = 612


@dataclass(frozen=True)
class SynthSpec:
    """Parameters of a synthetic trace (defaults: a phone in active use)."""

    seed: int = 1
    duration_s: float = 600.0  # trace length
    apps: int = 60  # installed apps the user may open
    initial_running: int = 24  # app processes alive at the start (cached)
    max_cached: int = 32  # ActivityManagerConstants.DEFAULT_MAX_CACHED_PROCESSES (0x20)
    launch_every_s: float = 20.0  # mean gap between app launches
    service_every_s: float = 10.0  # mean gap between service starts/stops
    system_processes: int = 150  # native/system processes in the process list (no churn)
    cpus: int = 8
    #: lmkd makes the kills (beyond max_cached) and marks each as lmkd does: "instant"
    #: (lowmemorykiller track), "slice" (lmk,... atrace slice), "counter"
    #: (kill_one_process), "signal" (no mark: only the kernel's signal_generate sig=9
    #: from lmkd). "" = none (the kills are ActivityManager's, unmarked).
    lmk_kills: str = ""


@dataclass
class _Proc:
    pid: int
    name: str
    adj: int = CACHED_MIN
    state: str = "cached"  # top | previous | service | bound | cached | empty
    born: int = 0  # ns into the trace


class _Phone:
    def __init__(self, spec: SynthSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.next_pid = 3000
        self.lru: list[_Proc] = []  # most recently used first
        self.events: list[tuple[int, int, str, int, int]] = []  # (ts, pid, name, adj, alive)
        self.spawned: list[_Proc] = []
        self.kills: list[tuple[int, int]] = []  # (ts, pid)
        self.alive = 2 + spec.system_processes  # init, lmkd, daemons (+ apps as they start)
        for i in range(spec.initial_running):
            p = self._spawn(i, 0)
            p.state = "cached" if i % 2 == 0 else "empty"
        self._set_cached(0)  # initial slots, written at t=0

    def _spawn(self, app: int, ts: int) -> _Proc:
        p = _Proc(self.next_pid, f"com.example.app{app:03d}", born=ts)
        self.next_pid += self.rng.randint(3, 40)
        self.alive += 1
        self.lru.insert(0, p)
        self.spawned.append(p)
        return p

    def _write(self, ts: int, p: _Proc, adj: int) -> int:
        if p.adj != adj:  # AMS tells lmkd only about changes
            p.adj = adj
            self.events.append((ts, p.pid, p.name, adj, self.alive))
            ts += self.rng.randint(20_000, 200_000)
        return ts

    def _set_cached(self, ts: int) -> int:
        """OomAdjuster's cached slots: LRU order, `factor` processes per slot."""
        cached = [p for p in self.lru if p.state in ("cached", "empty")]
        factor = max(1, -(-len(cached) // NUM_SLOTS))
        n_act = n_empty = 0
        for p in cached:
            if p.state == "cached":
                adj = CACHED_MIN + 2 * IMPORTANCE_LEVELS * (n_act // factor)
                n_act += 1
            else:
                adj = CACHED_MIN + IMPORTANCE_LEVELS + 2 * IMPORTANCE_LEVELS * (n_empty // factor)
                n_empty += 1
            ts = self._write(ts, p, min(adj, CACHED_MAX))
        return ts

    def launch(self, ts: int) -> int:
        rng, spec = self.rng, self.spec
        names = {p.name: p for p in self.lru}
        app = rng.randrange(spec.apps)
        p = names.get(f"com.example.app{app:03d}")
        if p is None:
            p = self._spawn(app, ts)
        elif p.state == "top":
            return ts
        self.lru.remove(p)
        self.lru.insert(0, p)
        for q in self.lru:
            if q.state == "previous":
                q.state = "cached"
            elif q.state == "top":
                q.state = "previous"
                ts = self._write(ts, q, PREVIOUS)
            elif q.state == "bound":
                q.state = "cached"
        p.state = "top"
        ts = self._write(ts, p, FOREGROUND)
        others = [q for q in self.lru if q.state in ("cached", "empty")]
        for q in rng.sample(others, min(len(others), rng.randint(0, 3))):
            q.state = "bound"
            ts = self._write(ts, q, rng.choice((VISIBLE, PERCEPTIBLE)))
        ts = self._set_cached(ts)
        self._trim(ts)
        return ts

    def service(self, ts: int) -> int:
        rng = self.rng
        svc = [p for p in self.lru if p.state == "service"]
        idle = [p for p in self.lru if p.state in ("cached", "empty")]
        if svc and (not idle or rng.random() < 0.5):
            p = rng.choice(svc)
            if p.adj == SERVICE and rng.random() < 0.3:
                return self._write(ts, p, SERVICE_B)  # an old service: the B list
            p.state = "cached"
            return self._set_cached(ts)
        if idle:
            p = rng.choice(idle)
            p.state = "service"
            ts = self._write(ts, p, SERVICE)
            return self._set_cached(ts)
        return ts

    def _trim(self, ts: int) -> None:
        cached = [p for p in self.lru if p.state in ("cached", "empty")]
        for p in cached[self.spec.max_cached :]:
            self.lru.remove(p)  # killed by AMS: no more updates
            self.kills.append((ts, p.pid))
            self.alive -= 1


def generate(spec: SynthSpec = SynthSpec()) -> tuple[bytes, pd.DataFrame]:
    """(serialized Perfetto trace, ground truth per event: ts_ns, pid, comm, adj, and
    alive = processes alive when it was written, this one included)."""
    # the perfetto wheel ships no type information
    from perfetto.protos.perfetto.trace import (  # type: ignore[import-untyped, unused-ignore]
        perfetto_trace_pb2 as pb,
    )

    phone = _Phone(spec)
    rng, end = phone.rng, int(spec.duration_s * 1e9)
    t_launch = int(rng.expovariate(1 / spec.launch_every_s) * 1e9)
    t_service = int(rng.expovariate(1 / spec.service_every_s) * 1e9)
    ts = 0
    while min(t_launch, t_service) < end:
        if t_launch <= t_service:
            ts = phone.launch(max(ts, t_launch))
            t_launch += int(rng.expovariate(1 / spec.launch_every_s) * 1e9)
        else:
            ts = phone.service(max(ts, t_service))
            t_service += int(rng.expovariate(1 / spec.service_every_s) * 1e9)
    boot0 = 3_600_000_000_000  # the phone booted an hour before the trace started
    truth = pd.DataFrame(phone.events, columns=["ts_ns", "pid", "name", "adj", "alive"])
    truth["ts_ns"] += boot0
    truth["comm"] = truth["name"].str[-15:]  # TASK_COMM_LEN 16: the name's tail
    trace = pb.Trace()
    snap = trace.packet.add(timestamp=boot0).clock_snapshot
    snap.clocks.add(clock_id=pb.BUILTIN_CLOCK_BOOTTIME, timestamp=boot0)
    snap.clocks.add(clock_id=pb.BUILTIN_CLOCK_MONOTONIC, timestamp=boot0 - 7_000_000_000)
    tree = trace.packet.add(timestamp=boot0).process_tree
    tree.processes.add(pid=1, ppid=0, cmdline=["/system/bin/init"], uid=0)
    tree.processes.add(pid=LMKD_PID, ppid=1, cmdline=["/system/bin/lmkd"], uid=1069)
    for i in range(spec.system_processes):
        tree.processes.add(pid=100 + i, ppid=1, cmdline=[f"/system/bin/daemon{i}"], uid=1000)
    for p in phone.spawned:  # each app in the first process list that saw it
        t = tree if p.born == 0 else trace.packet.add(timestamp=boot0 + p.born).process_tree
        t.processes.add(pid=p.pid, ppid=700, cmdline=[p.name], uid=10000 + p.pid % 997)
    for start in range(0, len(truth), 1000):
        b = trace.packet.add(timestamp=boot0).ftrace_events
        b.cpu = rng.randrange(spec.cpus)
        part = truth.iloc[start : start + 1000]
        for t_ns, pid, comm, adj in zip(part["ts_ns"].tolist(), part["pid"].tolist(),
                                        part["comm"].tolist(), part["adj"].tolist(),
                                        strict=True):  # fmt: skip
            ev = b.event.add(timestamp=int(t_ns), pid=LMKD_PID)
            u = ev.oom_score_adj_update
            u.pid, u.comm, u.oom_score_adj = int(pid), comm, int(adj)
    if phone.kills:
        b = trace.packet.add(timestamp=boot0).ftrace_events
        b.cpu = rng.randrange(spec.cpus)
        for ts, pid in phone.kills:
            _lmk_mark(b, spec.lmk_kills, boot0 + ts, pid)
            b.event.add(timestamp=boot0 + ts, pid=pid).sched_process_free.pid = pid
    return trace.SerializeToString(), truth[["ts_ns", "pid", "comm", "adj", "alive"]]


#: atrace payloads lmkd writes per kill (lmkd.cpp; see droidoom/traces/kills.py).
LMK_MARKS = {
    "instant": ["N|{lmkd}|lowmemorykiller|lmk,{pid},8,906,0,0"],
    "slice": ["B|{lmkd}|lmk,{pid},8,906,0,0", "E|{lmkd}"],
    "counter": ["C|{lmkd}|kill_one_process|{pid}", "C|{lmkd}|kill_one_process|0"],
}


def _lmk_mark(bundle: Any, style: str, ts: int, pid: int) -> None:
    """lmkd's kill of `pid` at `ts` as a trace shows it (nothing for style "")."""
    if style == "signal":
        ev = bundle.event.add(timestamp=ts, pid=LMKD_PID)
        g = ev.signal_generate
        g.sig, g.pid, g.comm, g.group, g.result = 9, pid, "app", 1, 0
        return
    if style and style not in LMK_MARKS:
        raise ValueError(f"lmk_kills {style!r}: use {', '.join(LMK_MARKS)} or signal")
    for i, fmt in enumerate(LMK_MARKS.get(style, [])):
        ev = bundle.event.add(timestamp=ts + i * 500_000, pid=LMKD_PID)  # the kill takes 0.5 ms
        ev.print.ip, ev.print.buf = 0, fmt.format(lmkd=LMKD_PID, pid=pid) + "\n"
