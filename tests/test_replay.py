"""Trace replay (`--scenario replay:TRACE`) and `droidoom cost`, on this host's kernel with
the real helper, from synthetic Perfetto traces written with the real protobuf classes."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_cli

import droidoom
from droidoom.errors import DataError, UsageError
from droidoom.run.plans import build_plan
from droidoom.scenario import ROLES
from droidoom.spec import ProfileSpec
from droidoom.traces import replay
from droidoom.traces.synth import SynthSpec, generate

# 30 min of a phone in active use: launches, service churn, cached kills (exits)
LONG = SynthSpec(seed=3, duration_s=1800)
SHORT = SynthSpec(seed=5, duration_s=240)


@pytest.fixture(scope="module")
def long_trace(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    data, truth = generate(LONG)
    path = tmp_path_factory.mktemp("traces") / "long.pftrace"
    path.write_bytes(data)
    return path, truth


@pytest.fixture(scope="module")
def short_trace(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    data, truth = generate(SHORT)
    path = tmp_path_factory.mktemp("traces") / "short.pftrace"
    path.write_bytes(data)
    return path, truth


def _spec(path: Path, **kw) -> ProfileSpec:
    kw = {"kinds": ("threaded",), "populations": (0,), **kw}
    return replace(ProfileSpec(), scenario=f"replay:{path}", **kw).validate()


def test_plan_is_the_trace_per_process_in_order_with_its_gaps(long_trace):
    path, truth = long_trace
    rt = replay.load(path)
    assert rt.has_exits and rt.writer == "lmkd" and not rt.notes()
    # processes alive at each write: the generator's ground truth (kills are exits)
    np.testing.assert_array_equal(rt.events["alive"].to_numpy(), truth["alive"].to_numpy())
    assert truth["alive"].nunique() > 5
    plan = build_plan(_spec(path, kinds=("single", "threaded"), compress=50.0))
    (point,) = plan.points
    n = len(rt.pids)
    assert [t.kind for t in plan.targets] == ["single"] * n + ["threaded"] * n
    assert len(point.writes) == 2 * len(truth)
    for k in (0, 1):
        got = [(rt.pids[t - k * n], a) for t, a, _ in point.writes[k::2]]
        assert got == list(zip(truth["pid"], truth["adj"], strict=True))
    # the gaps rebuild the trace's clock, 50x faster, without drift
    at = np.cumsum(point.gaps_us[::2])
    want = (truth["ts_ns"] - truth["ts_ns"].iloc[0]).to_numpy() / 50_000
    assert np.abs(at - want).max() <= 0.5 + 1e-9
    assert set(point.gaps_us[1::2]) == {0}  # the second kind follows at once
    roles = {ROLES[r] for _, _, r in point.writes}
    assert {"foreground", "previous", "cached", "service"} <= roles


def test_local_replay_records_match_the_trace_one_to_one(short_trace, tmp_path):
    path, truth = short_trace
    p = run_cli("profile", "--local", "--scenario", f"replay:{path}", "--compress", "0",
                "--replay-kinds", "single,threaded", "--out", str(tmp_path))  # fmt: skip
    assert p.returncode == 0, p.stderr + p.stdout
    (run,) = [d for d in tmp_path.iterdir() if d.is_dir()]
    meta = json.loads((run / "run.json").read_text())
    rt = replay.load(path)
    assert meta["replay"]["sha256"] == rt.sha256 and meta["replay"]["updates"] == len(truth)
    assert meta["spec"]["populations"] == [rt.population()] and rt.population() > 100
    s = droidoom.load(run).sort_values("seq")
    assert (s["err"] == 0).all() and len(s) == 2 * len(truth)
    targets = {t["idx"]: t for t in meta["targets"]}
    n = len(rt.pids)
    for kind, k in (("single", 0), ("threaded", 1)):
        mine = s[s["kind"] == kind]
        # in trace order, record i is update i, written to that process's target
        assert (mine["seq"].to_numpy() == np.arange(len(truth)) * 2 + k).all()
        assert mine["adj_to"].tolist() == truth["adj"].tolist()
    # per process: the helper's adj sequence is the trace's, one to one, in order, and
    # each write found the value the previous write of that process left (adj_from), so
    # every process's writes went to one target of its own
    assert len(targets) == 2 * n and all(t["status"] == "ok" for t in targets.values())
    for kind in ("single", "threaded"):
        mine = s[s["kind"] == kind].reset_index(drop=True)
        for pid, want in truth.groupby("pid")["adj"]:
            rows = mine[(truth["pid"] == pid).to_numpy()]
            assert rows["adj_to"].tolist() == want.tolist()
            assert rows["adj_from"].tolist()[1:] == want.tolist()[:-1]


def test_compressed_replay_keeps_the_trace_pace(short_trace, tmp_path):
    path, truth = short_trace
    p = run_cli("profile", "--local", "--scenario", f"replay:{path}", "--compress", "400",
                "--population", "0", "--out", str(tmp_path))  # fmt: skip
    assert p.returncode == 0, p.stderr + p.stdout
    s = droidoom.load(tmp_path).sort_values("seq")
    t = s["t_ns"].to_numpy(np.int64)
    want = (truth["ts_ns"] - truth["ts_ns"].iloc[0]).to_numpy() / 400
    # no write before its (compressed) trace time; sleeps only ever overshoot
    assert ((t - t[0]) >= want - 1e6).all()
    assert (t[-1] - t[0]) >= want[-1] - 1e6 > 0.4e9


def _flat(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def _trace_with(packets) -> bytes:
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    t = pb.Trace()
    for fill in packets:
        fill(t.packet.add(timestamp=1000), pb)
    return t.SerializeToString()


def _tree_only(pkt, pb):
    pkt.process_tree.processes.add(pid=1, ppid=0, cmdline=["/system/bin/init"])


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("no-events.pftrace", _trace_with([_tree_only]), "no oom/oom_score_adj_update events"),
        ("cut.pftrace", None, "is truncated at byte"),
        ("trace.json", b'{"traceEvents": []}', "not a Perfetto protobuf trace"),
        ("empty.pftrace", b"", "is empty"),
    ],
)
def test_bad_traces_are_one_clear_line(tmp_path, short_trace, name, content, message):
    f = tmp_path / name
    f.write_bytes(content if content is not None else short_trace[0].read_bytes()[:-7])
    p = run_cli("profile", "--local", "--scenario", f"replay:{f}", "--out", str(tmp_path))
    assert p.returncode == 2, p.stderr
    assert message in _flat(p.stderr) and "Traceback" not in p.stderr
    p = run_cli("cost", str(f), "--run", str(tmp_path))
    assert p.returncode == 2 and message in _flat(p.stderr), p.stderr


def test_missing_trace_and_misused_options(tmp_path):
    p = run_cli("profile", "--local", "--scenario", "replay:/nonexistent.pftrace")
    assert p.returncode == 2 and "cannot read trace /nonexistent.pftrace" in _flat(p.stderr)
    p = run_cli("profile", "--local", "--compress", "10")
    assert p.returncode == 2 and "go with --scenario replay:TRACE" in _flat(p.stderr)
    p = run_cli("profile", "--local", "--scenario", "replay:x", "--compress", "-1")
    assert p.returncode == 2 and "--compress" in _flat(p.stderr)


FTRACE = """# tracer: nop
#
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
            lmkd-612     [001] ..... 100.000100: oom_score_adj_update: pid=3001 comm=com.a oom_score_adj=0
            lmkd-612     [001] ..... 100.000200: oom_score_adj_update: pid=3002 comm=com.b oom_score_adj=-800
            lmkd-612     [001] ..... 100.500000: oom_score_adj_update: pid=3001 comm=com.a oom_score_adj=700
            lmkd-612     [001] ..... 101.000000: oom_score_adj_update: pid=3002 comm=com.b oom_score_adj=900
"""  # noqa: E501


def test_ftrace_text_trace_and_clamping(tmp_path):
    f = tmp_path / "atrace.txt"
    f.write_text(FTRACE)
    rt = replay.load(f)
    assert rt.pids == (3001, 3002) and rt.events["adj"].tolist() == [0, -800, 700, 900]
    assert any("no process list" in n for n in rt.notes())
    plan = build_plan(_spec(f), adj_min=-500)  # a user that may not go below -500
    assert plan.clamped == 1
    assert [a for _, a, _ in plan.points[0].writes] == [0, -500, 700, 900]
    assert [ROLES[r] for _, _, r in plan.points[0].writes] == [
        "foreground", "persistent", "previous", "cached"]


def test_more_processes_than_targets_are_capped_and_said(tmp_path):
    def many(pkt, pb):
        b = pkt.ftrace_events
        for i in range(300):
            for j in range(1 + (i < 10)):  # the first 10 processes are updated twice
                u = b.event.add(timestamp=1000 + 2 * i + j, pid=612).oom_score_adj_update
                u.pid, u.comm, u.oom_score_adj = 5000 + i, "app", 900 + j

    f = tmp_path / "many.pftrace"
    f.write_bytes(_trace_with([many]))
    rt = replay.load(f, n_kinds=2)
    assert len(rt.pids) == 128 and rt.dropped_processes == 172
    assert set(range(5000, 5010)) <= set(rt.pids)  # the busiest kept
    assert any("172 least-updated processes" in n for n in rt.notes())
    with pytest.raises(DataError):
        replay.load(tmp_path / "absent.pftrace")


def test_repeat_alternates_sweep_points_and_plays(long_trace):
    """--repeat 4: per population visit, rounds of a sweep point and a play, in turn first
    (ABBA); a sweep point writes the play's targets in the play's order with lmkd-model
    values that always change; run.json names the sweep points."""
    path, _ = long_trace
    rt = replay.load(path, 2)
    plan = build_plan(_spec(path, kinds=("single", "threaded"), populations=(0, 50), repeat=4))
    sweep = plan.info["replay"]["sweep_points"]
    assert plan.info["replay"]["repeat"] == 4 and len(sweep) == 4 * 4  # visits 0, 50, 50, 0
    is_sweep = [p.idx in sweep for p in plan.points]
    assert is_sweep == [True, False, False, True, True, False, False, True] * 4
    plays = [p for p in plan.points if p.idx not in sweep]
    assert len({p.writes for p in plays}) == 1
    for p in plan.points:
        if p.idx in sweep:
            assert [t for t, _, _ in p.writes] == [t for t, _, _ in plays[0].writes]
            assert [a for _, a, _ in p.writes] != [a for _, a, _ in plays[0].writes]
            last: dict[int, int] = {}
            for t, a, _ in p.writes:
                assert last.get(t) != a
                last[t] = a
    assert [p.warmup > 0 for p in plan.points[:2]] == [True, False]
    assert len(rt.pids) * 2 == len(plan.targets)
    with pytest.raises(UsageError, match="--repeat must be 1..100"):
        _spec(path, repeat=0)


def test_replay_samples_name_their_process_and_export_gives_it_a_track(tmp_path):
    """A replay run's writes carry their target (index, pid) and the trace's process they
    stand for (pid, name); `export --perfetto` puts each replayed process on its own track
    named after the trace's process. (Samples carried no target: every slice of a
    201-process replay landed on one track per kind.)"""
    from collections import Counter

    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    data, truth = generate(SynthSpec(seed=11, duration_s=90))
    path = tmp_path / "t.pftrace"
    path.write_bytes(data)
    out = tmp_path / "runs"
    p = run_cli("profile", "--local", "--scenario", f"replay:{path}", "--compress", "0",
                "--replay-kinds", "single,threaded", "--out", str(out))  # fmt: skip
    assert p.returncode == 0, p.stderr + p.stdout
    (run,) = [d for d in out.iterdir() if d.is_dir()]
    meta = json.loads((run / "run.json").read_text())
    rt = replay.load(path)
    n = len(rt.pids)
    assert n > 10 and any(len(nm) > 15 for nm in rt.names)  # full names, not 15-char comms
    assert meta["replay"]["processes"] == [{"pid": p, "name": nm}
                                           for p, nm in zip(rt.pids, rt.names, strict=True)]
    s = droidoom.load(run).sort_values("seq")
    assert str(s["trace_process"].dtype) == "category" and str(s["target"].dtype) == "Int16"
    target_pid = {int(t["idx"]): int(t["pid"]) for t in meta["targets"]}
    assert (s["target_pid"].astype(int) == s["target"].astype(int).map(target_pid)).all()
    assert (s["trace_pid"] == s["target"].astype(int).map(lambda t: rt.pids[t % n])).all()
    assert (s["trace_process"].astype(str)
            == s["target"].astype(int).map(lambda t: rt.names[t % n])).all()
    # in trace order, each write is its update's process (single, threaded taking turns)
    assert s["trace_pid"].tolist()[::2] == truth["pid"].tolist()
    pf = tmp_path / "replay.pftrace"
    p = run_cli("export", str(run), "--perfetto", str(pf))
    assert p.returncode == 0, p.stdout + p.stderr
    trace = pb.Trace.FromString(pf.read_bytes())
    tracks = {x.track_descriptor.uuid: x.track_descriptor.name for x in trace.packet
              if x.HasField("track_descriptor")}  # fmt: skip
    begins = [x for x in trace.packet if x.HasField("track_event")
              and x.track_event.type == pb.TrackEvent.TYPE_SLICE_BEGIN]  # fmt: skip
    per_track = Counter(tracks[b.track_event.track_uuid] for b in begins)
    want = Counter()
    for (tgt, kind), g in s.groupby(["target", "kind"], observed=True):
        j = int(tgt) % n
        want[f"{rt.names[j]} (trace pid {rt.pids[j]}; {kind} target (pid {target_pid[tgt]}))"] \
            = len(g)
    assert per_track == want and len(per_track) == 2 * n


def test_replay_columns_pool_with_older_runs(tmp_path):
    """A replay run's extra columns (schema.REPLAY_COLUMNS) pooled with a run that lacks
    them (any other scenario, or a replay recorded before they existed) load as missing
    values, not an error."""
    from droidoom import schema

    base = schema.empty()
    a = schema.coerce(pd.concat([base, pd.DataFrame({c: [1] for c in base.columns})]))
    b = a.assign(target=3, target_pid=1234, trace_pid=77, trace_process="com.app")
    pooled = schema.coerce(pd.concat([b, a], ignore_index=True))
    assert pooled["target"].tolist()[0] == 3 and pooled["target"].isna().tolist() == [False, True]
    assert str(pooled["trace_pid"].dtype) == "Int32"
    assert str(pooled["trace_process"].dtype) == "category"
