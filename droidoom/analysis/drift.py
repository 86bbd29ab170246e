"""Drift over a run's duration (DVFS, thermal throttling, a busy phone), told apart from
the population's effect.

The default sweep goes up and back down (scenario.sweep), so every population but the
largest is visited twice, early and late. On a steady device the two visits of one
population agree for every kind; a device that heats up, throttles or changes frequency
shows the same kinds faster or slower on the way down. `drift()` measures that gap per
kind, and reads the per-point CPU frequency and thermal readings the helper records
(run.json `points[].freq_khz` / `temp_mc`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..schema import timed

#: |late / early - 1| of the median over revisited populations that counts as drift.
DRIFT_MIN = 0.15


@dataclass(frozen=True)
class Drift:
    """How much the same (kind, population) changed between its early and late visit."""

    change: float  # median over kinds of (late / early - 1); NaN if nothing was revisited
    per_kind: dict[str, float]
    pairs: int  # (kind, population) pairs visited twice
    freq_range_khz: dict[str, tuple[int, int]]  # cpufreq policy -> (min, max) over points
    temp_rise_c: float | None  # hottest zone, last point minus first point
    detected: bool
    phone: bool = True  # an Android device (it has an SDK level): it may heat and throttle

    def text(self) -> str:
        """One clause for the verdict, or "" when the run was steady."""
        if not self.detected:
            return ""
        parts = [
            f"drift: the same kind and population ran {self.change:+.0%} on the way back down "
            "(so time, not only the population, moved latency)"
        ]
        moved = [f"{p} {lo // 1000}-{hi // 1000} MHz" for p, (lo, hi) in
                 self.freq_range_khz.items() if lo != hi]  # fmt: skip
        if moved:
            parts.append("CPU frequency changed between points (" + ", ".join(moved) + ")")
        if self.temp_rise_c is not None and abs(self.temp_rise_c) >= 2:
            parts.append(f"temperature {self.temp_rise_c:+.0f} °C over the run")
        settle = "let the phone cool" if self.phone else "let the host settle (other jobs?)"
        return "; ".join(parts) + f"; pin a core (--cpu), {settle} and re-run"


def _states(points: list[Mapping[str, Any]], key: str) -> list[dict[str, int]]:
    out = []
    for p in points:
        d = {}
        for item in str(p.get(key) or "").split(","):
            name, _, value = item.rpartition(":")
            if name and value.lstrip("-").isdigit():
                d[name] = int(value)
        out.append(d)
    return out


def drift(samples: pd.DataFrame, meta: Mapping[str, Any] | None = None) -> Drift:
    """Drift of one device's run(s): early vs late visits of each (kind, population)."""
    per_kind: dict[str, float] = {}
    pairs = 0
    if len(samples) and {"point", "population", "kind", "latency_ns"} <= set(samples.columns):
        samples = timed(samples) if "err" in samples.columns else samples
        run = ["run_id"] if "run_id" in samples.columns else []  # point numbers are per run
        by_point = samples.groupby([*run, "kind", "population", "point"], observed=True)
        med = by_point["latency_ns"].median().reset_index()
        for kind, g in med.groupby("kind", observed=True):
            ratios = []
            for _key, v in g.groupby([*run, "population"], observed=True):
                if len(v) >= 2:
                    v = v.sort_values("point")
                    early, late = float(v["latency_ns"].iloc[0]), float(v["latency_ns"].iloc[-1])
                    if early > 0:
                        ratios.append(late / early - 1)
            if ratios:
                per_kind[str(kind)] = float(np.median(ratios))
                pairs += len(ratios)
    change = float(np.median(list(per_kind.values()))) if per_kind else float("nan")
    points = list((meta or {}).get("points") or [])
    freqs: dict[str, tuple[int, int]] = {}
    for d in _states(points, "freq_khz"):
        for k, khz in d.items():
            lo, hi = freqs.get(k, (khz, khz))
            freqs[k] = (min(lo, khz), max(hi, khz))
    temps = [max(d.values()) / 1000 for d in _states(points, "temp_mc") if d]
    rise = temps[-1] - temps[0] if len(temps) >= 2 else None
    detected = bool(np.isfinite(change) and abs(change) >= DRIFT_MIN)
    phone = bool(((meta or {}).get("target") or {}).get("sdk")) if meta else True
    return Drift(change, per_kind, pairs, freqs, rise, detected, phone)


#: A target is busy beyond measuring when its 1-minute load average exceeds this many
#: runnable tasks per CPU (plus one: the writer itself).
BUSY_LOAD_PER_CPU = 2.0
#: ... or when its process count moved by more than this share during the run.
PROCS_MOVED = 0.10


def _load1(value: object) -> float | None:
    try:
        return float(str(value).split()[0])
    except (ValueError, IndexError):
        return None


def disturbances(meta: Mapping[str, Any] | None) -> list[str]:
    """What else ran on the target during the run, from run.json's `device_activity`
    (sampled when the lock was taken and released): other droidoom helpers (their
    populations are walked by every multiprocess write too), a process count that moved,
    a load well above the CPU count. Each is a clause for the notices and the verdict."""
    act = (meta or {}).get("device_activity")
    if not isinstance(act, Mapping):
        return []
    sides = [s if isinstance(s, Mapping) else {} for s in (act.get("before"), act.get("after"))]
    out = []
    helpers = [h for s in sides if isinstance(h := s.get("helpers"), int) and h > 0]
    # Sampled at each sweep point (run/others.py): runs, not processes, of other helpers.
    during = act.get("during")
    during = during if isinstance(during, list) else []
    runs = [(d.get("point"), h) for d in during if isinstance(d, Mapping)
            and isinstance(h := d.get("helpers"), int) and h > 0]  # fmt: skip
    if helpers:
        out.append(f"{max(helpers)} droidoom-helper processes of another run were alive on "
                   "the target (every multiprocess write walks them too)")  # fmt: skip
    elif runs:
        points = ", ".join(str(p) for p, _ in runs)
        out.append(f"another droidoom run ({max(h for _, h in runs)} helper(s)) ran on the "
                   f"target during this one (seen at point(s) {points}; every multiprocess "
                   "write walks its processes too)")  # fmt: skip
    procs = [p for s in sides if isinstance(p := s.get("procs"), int) and p > 0]
    if len(procs) == 2 and abs(procs[1] - procs[0]) > PROCS_MOVED * procs[0]:
        out.append(f"the target's process count moved {procs[0]} -> {procs[1]} during the run")
    target = (meta or {}).get("target")
    cpus = target.get("cpus") if isinstance(target, Mapping) else None
    loads = [x for s in sides if (x := _load1(s.get("loadavg"))) is not None]
    if isinstance(cpus, int) and cpus > 0 and loads and max(loads) > BUSY_LOAD_PER_CPU * cpus + 1:
        out.append(f"load average {max(loads):.1f} on {cpus} CPU(s)")
    return out
