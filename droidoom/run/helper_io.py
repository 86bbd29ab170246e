"""What the helper hands back, as host objects: `probe` facts and the records file as the
samples DataFrame. The wire format itself (plan text, event lines, record layout) is in
`droidoom.protocol`; this module adds the plan's labels and the target's shell."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from .. import schema
from ..errors import DataError, HelperError
from ..protocol import (
    KILL_RECORD_DTYPE,
    KILL_SHARED,
    KILL_STAGES,
    KILL_VICTIM_IDLE,
    KILL_VICTIM_PINNED,
    Event,
    decode_records,
    parse_line,
)
from ..scenario import ROLES, Plan, warmup_flags
from ..targets.base import Target


@dataclass(frozen=True)
class Probe:
    """The three lines of `droidoom-helper probe` (device_scripts/PROTOCOL.md)."""

    hello: Event  # proto, source hash, abi, pid
    facts: Event  # permissions and limits: uid, adj_min, pid_max, clone_vm...
    calib: Event  # timer resolution: timer_ns, timer_min_ns

    @property
    def adj_min(self) -> int:
        """Lowest oom_score_adj this user may write (-1000 when the helper did not say)."""
        return self.facts.int("adj_min", -1000)


def probe(target: Target, helper: str) -> Probe:
    """Run `helper probe`: permissions (adj_min), limits, timer calibration."""
    res = target.sh(f"{shlex.quote(helper)} probe", timeout=60)
    events = {e.kind: e for e in map(parse_line, res.stdout.splitlines()) if e}
    if not res.ok or not {"hello", "facts", "calib"} <= events.keys():
        raise HelperError(
            f"{target.name}: `droidoom-helper probe` failed (exit {res.exit_code}): "
            f"{(res.stderr or res.stdout).strip()[:300]}",
            res.exit_code,
        )
    return Probe(hello=events["hello"], facts=events["facts"], calib=events["calib"])


def records_to_frame(data: bytes, plan: Plan, run_id: str, device: str) -> pd.DataFrame:
    """Decode helper records and label them with the plan (vectorised)."""
    rec = decode_records(data)
    if plan.measure == "kill":
        return _kill_frame(rec, plan, run_id, device)
    if rec.dtype == KILL_RECORD_DTYPE:
        raise DataError("records file holds kills but the run's plan times writes")
    n = len(rec)
    limits = {"point": len(plan.points), "target": len(plan.targets), "role": len(ROLES)}
    for field, limit in limits.items():
        if n and int(rec[field].max()) >= limit:
            # Not the helper's output for this plan (another run's, or forged): refuse it
            # rather than fail with an IndexError or label writes with the wrong point.
            raise DataError(
                f"the records name {field} {int(rec[field].max())}, beyond the {limit} "
                f"{field}s of this run's plan: they are not this run's records"
            )
    kinds = pd.Index(schema.KINDS)
    kind_of_target = np.array([schema.KINDS.index(t.kind) for t in plan.targets], dtype=np.int8)
    pts = plan.points
    pop = np.array([p.population for p in pts], dtype=np.int32)
    thr = np.array([p.threads for p in pts], dtype=np.int16)
    mode = np.array([schema.MODES.index(p.mode) for p in pts], dtype=np.int8)
    point = rec["point"].astype(np.int64)

    def const(value: str) -> pd.Categorical[str]:
        return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), pd.Index([value]))

    df = pd.DataFrame(
        {
            "run_id": const(run_id),
            "device": const(device),
            "kind": pd.Categorical.from_codes(kind_of_target[rec["target"]], kinds),
            "mode": pd.Categorical.from_codes(mode[point], pd.Index(schema.MODES)),
            "population": pop[point],
            "threads": thr[point],
            "point": point,
            "seq": rec["seq"],
            "adj_from": rec["adj_from"],
            "adj_to": rec["adj_to"],
            "role": pd.Categorical.from_codes(rec["role"].astype(np.int16), pd.Index(ROLES)),
            "latency_ns": rec["latency_ns"],
            "t_ns": rec["t_ns"],
            "cpu": rec["cpu"],
            "err": rec["err"],
        }
    )
    flags = np.array(warmup_flags(plan), dtype=bool)
    if flags.any():  # blocks: the first writes after a switch of kind (scenario.in_blocks)
        df["warmup"] = flags[rec["seq"]]
    procs = (plan.info.get("replay") or {}).get("processes")
    if procs:  # a replay: each write's target and the trace's process it stands for
        proc = rec["target"].astype(np.int64) % len(procs)  # targets: kind-major, per process
        df["target"] = rec["target"]
        df["trace_pid"] = np.array([int(p["pid"]) for p in procs], dtype=np.int32)[proc]
        names = pd.Index([str(p["name"]) for p in procs])
        df["trace_process"] = pd.Categorical(names[proc])
    return schema.coerce(df)


def with_target_pids(df: pd.DataFrame, targets: Mapping[int, Mapping[str, Any]]) -> pd.DataFrame:
    """`df` with `target_pid` (schema.REPLAY_COLUMNS) from the helper's target lines
    (idx -> {"pid": ...}), when its rows name their target; unchanged otherwise."""
    if "target" not in df.columns or not targets:
        return df
    pids = {int(k): int(v.get("pid") or 0) or None for k, v in targets.items()}
    out = df.copy()
    out["target_pid"] = df["target"].astype(int).map(pids).astype("Int32")
    return out


def _kill_frame(rec: np.ndarray, plan: Plan, run_id: str, device: str) -> pd.DataFrame:
    """A kill plan's records as samples: the write columns (latency_ns = process_mrelease)
    plus schema.KILL_COLUMNS."""
    if rec.dtype != KILL_RECORD_DTYPE:
        if len(rec):
            raise DataError("records file holds writes but the run's plan times kills")
        rec = np.zeros(0, dtype=KILL_RECORD_DTYPE)
    n, zeros = len(rec), np.zeros(len(rec), dtype=np.int16)
    kind_of_victim = np.array([schema.KINDS.index(t.kind) for t in plan.targets], dtype=np.int8)
    kinds = pd.Index(schema.KINDS)
    pts = plan.points
    pop = np.array([p.population for p in pts], dtype=np.int32)
    thr = np.array([p.threads for p in pts], dtype=np.int16)
    point = rec["point"].astype(np.int64)
    flags = rec["flags"]

    def const(value: str) -> pd.Categorical[str]:
        return pd.Categorical.from_codes(np.zeros(n, dtype=np.int8), pd.Index([value]))

    df = pd.DataFrame(
        {
            "run_id": const(run_id),
            "device": const(device),
            "kind": pd.Categorical.from_codes(kind_of_victim[rec["victim"]], kinds),
            "mode": const("reopen"),
            "population": pop[point],
            "threads": thr[point],
            "point": point,
            "seq": rec["seq"],
            "adj_from": zeros,
            "adj_to": zeros,
            "role": pd.Categorical.from_codes(rec["role"].astype(np.int16), pd.Index(ROLES)),
            "latency_ns": rec["mrelease_ns"],
            "t_ns": rec["t_ns"],
            "cpu": rec["cpu"],
            "err": rec["err"],
            "measure": const("kill"),
            "open_ns": rec["open_ns"],
            "kill_ns": rec["kill_ns"],
            "reap_ns": rec["reap_ns"],
            "spawn_ns": rec["spawn_ns"],
            "stage": pd.Categorical.from_codes(
                np.minimum(rec["stage"], len(KILL_STAGES) - 1).astype(np.int8),
                pd.Index(KILL_STAGES),
            ),
            "shared": (flags & KILL_SHARED) != 0,
            "victim_threads": rec["threads"].astype(np.int16),
            "victim_idle": (flags & KILL_VICTIM_IDLE) != 0,
            "victim_pinned": (flags & KILL_VICTIM_PINNED) != 0,
        }
    )
    wflags = np.array(warmup_flags(plan), dtype=bool)
    if wflags.any():  # the first kills after a switch of kind (scenario.in_blocks)
        df["warmup"] = wflags[rec["seq"]]
    return schema.coerce(df)
