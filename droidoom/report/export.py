"""Export a run as a Perfetto trace, to open in the Perfetto UI next to a system trace.

Layout (TrackEvent, the SDK's track model; written with the perfetto wheel's protobuf
classes, one packet at a time so big runs never sit in memory twice):

    droidoom <run id>                 a parent track
      <kind> target (pid N)           one track per target; one slice per timed write
                                      (a replay's: "<the trace's process> (trace pid M;
                                      <kind> target (pid N))"):
                                      name = ActivityManager role (e.g. "cached"),
                                      args adj_from, adj_to, latency_ns, population,
                                      cpu, err, seq (and trace_offset_ns when captured)
      population                      counter: extra processes alive, stepped per point
      cpu<N> freq (kHz)               counters, when the run recorded CPU frequencies

Timestamps: when the run was captured with `--capture perfetto`, writes are placed on
the phone's BOOTTIME (t_ns + the boot-minus-monotonic offset from that trace's clock
snapshots), the clock every Android system trace uses, and a clock snapshot relating
the two clocks is written too; otherwise t_ns (CLOCK_MONOTONIC) is used as it is.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, BinaryIO

import numpy as np
import pandas as pd

from .. import store
from ..errors import DataError

ROOT_UUID = 1
POP_UUID = 2
TARGET_UUID0 = 100
FREQ_UUID0 = 1000
SEQ = 1


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


class _Writer:
    """Appends TracePackets to a file as `Trace.packet` records (field 1, LEN)."""

    def __init__(self, f: BinaryIO, pb: ModuleType) -> None:
        self.f, self.pb, self.count, self.first = f, pb, 0, True

    def packet(self, **fields: Any) -> Any:  # a TracePacket (protobuf: untyped)
        pkt = self.pb.TracePacket(trusted_packet_sequence_id=SEQ, **fields)
        if self.first:
            pkt.sequence_flags = self.pb.TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
            self.first = False
        return pkt

    def write(self, pkt: Any) -> None:
        data = pkt.SerializeToString()
        self.f.write(b"\x0a" + _varint(len(data)) + data)
        self.count += 1


def _freq_points(meta: dict[str, Any]) -> dict[int, list[tuple[int, int]]]:
    """{cpu: [(point idx, kHz)]} from run.json points' `cpu_freq_khz` ({cpu: kHz}), if any."""
    out: dict[int, list[tuple[int, int]]] = {}
    for p in meta.get("points") or []:
        freqs = p.get("cpu_freq_khz")
        if not isinstance(freqs, dict):
            continue
        for cpu, khz in freqs.items():
            digits = "".join(ch for ch in str(cpu) if ch.isdigit())
            if digits and str(khz).lstrip("-").isdigit():
                out.setdefault(int(digits), []).append((int(p.get("idx", 0)), int(khz)))
    return out


def export_perfetto(run: str | Path, out: str | Path) -> dict[str, Any]:
    """Write run `run` as a Perfetto trace at `out`; return counts (tracks, slices, ...)."""
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    info = store.read_run(run)
    samples = store.load(info.path)
    if samples.empty:
        raise DataError(f"{info.path} has no samples to export (interrupted before any write?)")
    meta = info.meta
    off = (meta.get("captures") or {}).get("perfetto", {}).get("boot_minus_mono_ns")
    shift = int(off) if isinstance(off, int) else 0
    samples = samples.sort_values("t_ns", kind="stable")
    targets = {int(t["idx"]): t for t in meta.get("targets") or [] if "idx" in t}
    counts = {"tracks": 0, "slices": 0, "counters": 0, "clock": "monotonic"}
    with store.atomic_open(out, "--perfetto") as f:
        w = _Writer(f, pb)
        if off is not None:
            t0 = int(samples["t_ns"].iloc[0])
            pkt = w.packet(timestamp=t0 + shift)
            pkt.clock_snapshot.clocks.add(clock_id=pb.BUILTIN_CLOCK_BOOTTIME, timestamp=t0 + shift)
            pkt.clock_snapshot.clocks.add(clock_id=pb.BUILTIN_CLOCK_MONOTONIC, timestamp=t0)
            pkt.clock_snapshot.primary_trace_clock = pb.BUILTIN_CLOCK_BOOTTIME
            w.write(pkt)
            counts["clock"] = "boottime"
        _track(w, ROOT_UUID, f"droidoom {info.run_id}", None, counts)
        by_target = "target" in samples.columns
        keys = samples["target"].astype(int) if by_target else samples["kind"].astype(str)
        replayed = _replayed(samples) if by_target else {}
        uuid_of: dict[int | str, int] = {}
        for i, key in enumerate(pd.unique(keys)):
            if by_target:
                t = targets.get(int(key), {})
            else:  # one target per kind
                t = next((x for x in targets.values() if x.get("kind") == key), {})
            kind = t.get("kind", key)
            name = f"{kind} target (pid {t['pid']})" if t.get("pid") else f"{kind} target"
            if by_target and int(key) in replayed:  # a replay: named after the trace's process
                proc, tpid = replayed[int(key)]
                name = f"{proc} (trace pid {tpid}; {name})"
            uuid_of[key] = TARGET_UUID0 + i
            _track(w, uuid_of[key], name, ROOT_UUID, counts)
        _track(w, POP_UUID, "population", ROOT_UUID, counts, unit="processes")
        freqs = _freq_points(meta)
        for cpu in sorted(freqs):
            _track(w, FREQ_UUID0 + cpu, f"cpu{cpu} freq (kHz)", ROOT_UUID, counts, unit="kHz")
        _population(w, samples, shift, counts, freqs)
        _slices(w, samples, keys.loc[samples.index].map(uuid_of), shift, counts)
    counts["packets"] = w.count
    return counts


def _replayed(samples: pd.DataFrame) -> dict[int, tuple[str, int]]:
    """{target idx: (the trace's process name, its pid in the trace)} of a replay run's
    samples (schema.REPLAY_COLUMNS); {} for other runs."""
    if "trace_process" not in samples.columns:
        return {}
    first = samples.drop_duplicates("target")
    return {int(k): (str(n), int(p)) for k, n, p in zip(
        first["target"], first["trace_process"], first["trace_pid"], strict=True)}  # fmt: skip


def _track(
    w: _Writer,
    uuid: int,
    name: str,
    parent: int | None,
    counts: dict[str, Any],
    unit: str | None = None,
) -> None:
    pkt = w.packet()
    d = pkt.track_descriptor
    d.uuid, d.name = uuid, name
    if parent is not None:
        d.parent_uuid = parent
    if unit is not None:
        d.counter.unit_name = unit
    w.write(pkt)
    counts["tracks"] += 1


def _counter(w: _Writer, ts: int, uuid: int, value: int, counts: dict[str, Any]) -> None:
    pkt = w.packet(timestamp=ts)
    ev = pkt.track_event
    ev.type, ev.track_uuid, ev.counter_value = w.pb.TrackEvent.TYPE_COUNTER, uuid, value
    w.write(pkt)
    counts["counters"] += 1


def _population(
    w: _Writer,
    samples: pd.DataFrame,
    shift: int,
    counts: dict[str, Any],
    freqs: dict[int, list[tuple[int, int]]],
) -> None:
    """One population (and frequency) value at each point's first write."""
    first = samples.groupby("point", observed=True, sort=True).agg(
        t=("t_ns", "min"), population=("population", "first")
    )
    for point, row in first.iterrows():
        _counter(w, int(row["t"]) + shift, POP_UUID, int(row["population"]), counts)
        for cpu, values in freqs.items():
            for idx, khz in values:
                if idx == point:
                    _counter(w, int(row["t"]) + shift, FREQ_UUID0 + cpu, khz, counts)


def _slices(
    w: _Writer, samples: pd.DataFrame, uuids: pd.Series, shift: int, counts: dict[str, Any]
) -> None:
    TE = w.pb.TrackEvent
    cols = ["adj_from", "adj_to", "latency_ns", "population", "cpu", "err", "seq"]
    extra = [c for c in ("trace_offset_ns", "kernel_ns") if c in samples.columns]
    t = samples["t_ns"].to_numpy(np.int64) + shift
    lat = samples["latency_ns"].to_numpy(np.int64)
    roles = samples["role"].astype(str).to_numpy()
    values = {c: samples[c].to_numpy() for c in cols + extra}
    uu = uuids.to_numpy()
    for i in range(len(t)):
        pkt = w.packet(timestamp=int(t[i]))
        ev = pkt.track_event
        ev.type, ev.track_uuid, ev.name = TE.TYPE_SLICE_BEGIN, int(uu[i]), roles[i]
        for c in cols + extra:
            v = values[c][i]
            if not pd.isna(v):
                ev.debug_annotations.add(name=c, int_value=int(v))
        w.write(pkt)
        end = w.packet(timestamp=int(t[i] + max(lat[i], 1)))
        end.track_event.type, end.track_event.track_uuid = TE.TYPE_SLICE_END, int(uu[i])
        w.write(end)
        counts["slices"] += 1
