"""The helper plan of any spec: `replay:TRACE` scenarios from droidoom/traces/replay.py, the
role-change scenarios (lmkd, alternate) from droidoom/scenario.py.

A module of its own so that replay may build on scenario without scenario knowing replay
(no import cycle).
"""

from __future__ import annotations

from .. import scenario
from ..scenario import Plan
from ..spec import ProfileSpec
from ..traces import replay


def build_plan(spec: ProfileSpec, adj_min: int = -1000) -> Plan:
    """Targets and points for `spec`. Deterministic for a given spec (and trace file)."""
    if spec.measure == "kill":
        return scenario.build_kill_plan(spec)
    if replay.trace_path(spec.scenario) is not None:
        return replay.build_replay_plan(spec, adj_min)
    return scenario.build_plan(spec, adj_min)
