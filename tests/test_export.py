"""`droidoom export RUN --perfetto OUT`: the file parses back with the Perfetto protobuf
classes and holds one track per target, one slice per write and the counter tracks."""

from __future__ import annotations

import json
import shutil
from collections import Counter

from conftest import run_cli
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

import droidoom


def parse(path) -> pb.Trace:
    return pb.Trace.FromString(path.read_bytes())


def slices_and_tracks(trace: pb.Trace):
    tracks = {p.track_descriptor.uuid: p.track_descriptor for p in trace.packet
              if p.HasField("track_descriptor")}  # fmt: skip
    events = [p for p in trace.packet if p.HasField("track_event")]
    TE = pb.TrackEvent
    begins = [p for p in events if p.track_event.type == TE.TYPE_SLICE_BEGIN]
    ends = [p for p in events if p.track_event.type == TE.TYPE_SLICE_END]
    counters = [p for p in events if p.track_event.type == TE.TYPE_COUNTER]
    return tracks, begins, ends, counters


def test_export_local_run(local_run, tmp_path):
    out = tmp_path / "run.pftrace"
    p = run_cli("export", str(local_run), "--perfetto", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    df = droidoom.load(local_run)
    meta = json.loads((local_run / "run.json").read_text())
    tracks, begins, ends, counters = slices_and_tracks(parse(out))
    names = {t.name for t in tracks.values()}
    spawned = [t for t in meta["targets"] if int(t.get("pid") or 0) > 0]
    targets = [t for t in names if " target (pid " in t]
    assert len(targets) == df["kind"].nunique() == len(spawned)
    assert {f"{t['kind']} target (pid {t['pid']})" for t in spawned} == set(targets)
    assert "population" in names and any(n.startswith("droidoom ") for n in names)
    assert len(tracks) == len(targets) + 2  # + the parent and the population counter
    assert len(begins) == len(ends) == len(df)
    # one slice per write, on its target's track, named by role, adj and latency as args
    per_track = Counter(tracks[b.track_event.track_uuid].name for b in begins)
    assert sorted(per_track.values()) == sorted(df.groupby("kind", observed=True).size().tolist())
    assert Counter(b.track_event.name for b in begins) == Counter(df["role"].astype(str))
    first = min(begins, key=lambda b: b.timestamp)
    args = {a.name: a.int_value for a in first.track_event.debug_annotations}
    row = df.loc[df["t_ns"].idxmin()]
    assert first.timestamp == row["t_ns"]  # no perfetto capture: CLOCK_MONOTONIC as is
    assert (args["adj_to"], args["latency_ns"]) == (row["adj_to"], row["latency_ns"])
    assert len(counters) == df["point"].nunique()
    pops = sorted(c.track_event.counter_value for c in counters)
    assert pops == sorted(df.groupby("point", observed=True)["population"].first().tolist())


def test_export_adds_cpu_frequency_counters(local_run, tmp_path):
    """Points that carry `cpu_freq_khz` ({cpu: kHz}) get one counter track per CPU."""
    run = tmp_path / "run"
    shutil.copytree(local_run, run)
    meta = json.loads((run / "run.json").read_text())
    for i, point in enumerate(meta["points"]):
        point["cpu_freq_khz"] = {"cpu0": 1_000_000 + i, "cpu1": 2_000_000 + i}
    (run / "run.json").write_text(json.dumps(meta))
    out = tmp_path / "f.pftrace"
    assert run_cli("export", str(run), "--perfetto", str(out)).returncode == 0
    tracks, _, _, counters = slices_and_tracks(parse(out))
    freq = {u for u, t in tracks.items() if t.name.endswith("freq (kHz)")}
    assert len(freq) == 2
    values = sorted(c.track_event.counter_value for c in counters
                    if c.track_event.track_uuid in freq)  # fmt: skip
    n = len(meta["points"])
    assert values == sorted([1_000_000 + i for i in range(n)] + [2_000_000 + i for i in range(n)])


def test_export_needs_a_target_format(local_run, tmp_path):
    p = run_cli("export", str(local_run))
    assert p.returncode == 2 and "--perfetto" in p.stdout + p.stderr
    p = run_cli("export", str(tmp_path), "--perfetto", str(tmp_path / "x.pftrace"))
    assert p.returncode == 2 and "no run.json" in p.stdout + p.stderr
