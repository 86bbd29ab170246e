"""droidoom.traces.perfetto on traces built with the real Perfetto protobuf classes, and on
what a trace must not be confused with (a parser unit test: no device needed)."""

from __future__ import annotations

import gzip
import zlib

import pytest
from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

from droidoom.errors import DataError
from droidoom.traces.perfetto import (
    CLOCK_BOOTTIME,
    CLOCK_MONOTONIC,
    parse_trace,
    read_any,
    read_trace,
    require_oom_events,
)

BOOT_MINUS_MONO = 5_000_000_123


def _trace(events=((1000, 0, 50, 700, "app", 900),), lost=False, tree=True) -> pb.Trace:
    """events: (boot ts, cpu, writer tid, target pid, comm, adj)."""
    t = pb.Trace()
    snap = t.packet.add().clock_snapshot
    snap.clocks.add(clock_id=6, timestamp=10_000 + BOOT_MINUS_MONO)
    snap.clocks.add(clock_id=3, timestamp=10_000)
    if tree:
        pt = t.packet.add(timestamp=5).process_tree
        pt.processes.add(pid=50, ppid=1, cmdline=["/system/bin/lmkd"], uid=1069)
        pt.processes.add(pid=700, ppid=600, cmdline=["com.example.app", "--x"], uid=10100)
        pt.processes.add(pid=2, ppid=0, cmdline=["kthreadd"], cmdline_is_comm=True)
        pt.threads.add(tid=51, tgid=50, name="lmkd-worker")
    by_cpu: dict[int, list] = {}
    for e in events:
        by_cpu.setdefault(e[1], []).append(e)
    for cpu, evs in by_cpu.items():
        b = t.packet.add().ftrace_events
        b.cpu, b.lost_events = cpu, lost
        for ts, _, tid, pid, comm, adj in evs:
            ev = b.event.add(timestamp=ts, pid=tid)
            ev.oom_score_adj_update.pid = pid
            ev.oom_score_adj_update.comm = comm
            ev.oom_score_adj_update.oom_score_adj = adj
    st = t.packet.add().ftrace_stats
    st.phase = pb.FtraceStats.END_OF_TRACE
    st.cpu_stats.add(cpu=0, overrun=3, dropped_events=1)
    t.packet.add().trace_stats.buffer_stats.add(chunks_discarded=2)
    return t


def test_events_processes_clocks_and_losses():
    events = [(3000, 1, 51, 700, "app", 0), (1000, 0, 50, 700, "app", 900),
              (2000, 0, 50, 800, "other svc", 500)]  # fmt: skip
    tr = parse_trace(_trace(events, lost=True).SerializeToString())
    ev = tr.oom_events
    assert list(ev["ts_ns"]) == [1000, 2000, 3000]  # time order across CPU bundles
    assert list(ev["pid"]) == [700, 800, 700] and list(ev["adj"]) == [900, 500, 0]
    assert list(ev["writer_tid"]) == [50, 50, 51]
    assert list(ev["writer_tgid"]) == [50, 50, 50]  # thread 51 belongs to lmkd
    assert list(ev["comm"].astype(str)) == ["app", "other svc", "app"]
    p = tr.processes.set_index("pid")
    assert p.loc[700, "name"] == "com.example.app" and p.loc[700, "uid"] == 10100
    assert p.loc[700, "cmdline"] == "com.example.app --x" and p.loc[2, "name"] == "kthreadd"
    assert tr.clock_offset_ns(CLOCK_BOOTTIME, CLOCK_MONOTONIC) == BOOT_MINUS_MONO
    assert (tr.lost_events, tr.ftrace_overrun, tr.ftrace_dropped) == (2, 3, 1)
    assert tr.chunks_discarded == 2 and tr.losses == 8
    assert tr.truncated_at is None and tr.summary()["oom_events"] == 3
    assert tr.updates_by("lmkd")["pid"].tolist() == [700, 800, 700]  # tid 51 is lmkd's
    assert tr.updates_by("com.example.app").empty  # a known process that wrote nothing
    assert tr.updates_by("no-such-daemon").equals(ev)  # unknown writer: no filter


def test_gzip_and_compressed_packets(tmp_path):
    inner = _trace().SerializeToString()
    outer = pb.Trace()
    outer.packet.add().compressed_packets = zlib.compress(inner)
    f = tmp_path / "t.pftrace.gz"
    f.write_bytes(gzip.compress(outer.SerializeToString()))
    tr = read_trace(f)
    assert len(tr.oom_events) == 1 and len(tr.processes) == 3


def test_truncated_trace_keeps_complete_packets_or_refuses():
    data = _trace().SerializeToString()
    cut = data[:-5]
    tr = parse_trace(cut)
    assert tr.truncated_at is not None and tr.truncated_at < len(cut)
    assert len(tr.oom_events) == 1  # the events came before the cut
    with pytest.raises(DataError, match="truncated at byte"):
        parse_trace(cut, allow_truncated=False)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "is empty"),
        (b"# tracer: nop\n#\n  sh-1 [000] ....  1.0: oom_score_adj_update: pid=1", "text"),
        (b'{"traceEvents": []}', "not a Perfetto protobuf trace"),
        (b"\x0a\xff", "no complete packet"),
    ],
)
def test_not_a_trace_says_what_it_is(data, match):
    with pytest.raises(DataError, match=match):
        parse_trace(data)


def test_missing_file_and_no_events(tmp_path):
    with pytest.raises(DataError, match="cannot read trace"):
        read_trace(tmp_path / "nope.pftrace")
    tr = parse_trace(_trace(events=()).SerializeToString())
    with pytest.raises(DataError, match="oom/oom_score_adj_update"):
        require_oom_events(tr, "x.pftrace")


FTRACE_TEXT = """# tracer: nop
#
# entries-in-buffer/entries-written: 3/3   #P:8
#
           <...>-612     [002] .....  3601.000100: oom_score_adj_update: pid=4000 comm=ample.app001 oom_score_adj=0
            lmkd-612     [002] .....  3601.000350: oom_score_adj_update: pid=4100 comm=my app oom_score_adj=700
            lmkd-612     [003] d..1.  3601.000400: sched_switch: prev_comm=lmkd prev_pid=612
CPU:3 [LOST 7 EVENTS]
            lmkd-612     [003] .....  3602.500000: oom_score_adj_update: pid=4000 comm=ample.app001 oom_score_adj=900
"""  # noqa: E501


def test_read_any_takes_ftrace_text_and_protobuf(tmp_path):
    txt = tmp_path / "atrace.txt.gz"
    txt.write_bytes(gzip.compress(FTRACE_TEXT.encode()))
    tr = read_any(txt)
    ev = tr.oom_events
    assert list(ev["pid"]) == [4000, 4100, 4000] and list(ev["adj"]) == [0, 700, 900]
    assert list(ev["ts_ns"]) == [3601_000_100_000, 3601_000_350_000, 3602_500_000_000]
    assert list(ev["comm"].astype(str)) == ["ample.app001", "my app", "ample.app001"]
    assert set(ev["writer_tid"]) == {612} and tr.ftrace_dropped == 7 and tr.losses > 0
    pb_file = tmp_path / "t.pftrace"
    pb_file.write_bytes(_trace().SerializeToString())
    assert len(read_any(pb_file).oom_events) == 1
    bad = tmp_path / "x.json"
    bad.write_text('{"traceEvents": []}')
    with pytest.raises(DataError, match="not a Perfetto protobuf trace"):
        read_any(bad)


def test_join_counts_mismatches_and_outside_events():
    """join_trace on a hand-made trace: a warmup event before the samples, a write whose
    event names another pid, one whose adj differs, one without an event."""
    import pandas as pd

    from droidoom.capture.base import CaptureRunInfo
    from droidoom.capture.perfetto import join_trace

    off = BOOT_MINUS_MONO
    # helper 50 writes target pid 700; times in monotonic, events in boottime
    events = [(off + 500, 0, 50, 700, "t", 900),   # warmup: before every sample
              (off + 10_100, 0, 50, 700, "t", 0),   # write 0: inside
              (off + 20_050, 0, 50, 999, "x", 0),   # write 1: wrong pid
              (off + 30_200, 0, 50, 700, "t", 100),  # write 2: adj differs (200 written)
              (off + 40_000, 0, 77, 700, "t", 0)]   # another writer: ignored
    tr = parse_trace(_trace(events).SerializeToString())
    samples = pd.DataFrame({
        "t_ns": [10_000, 20_000, 30_000, 50_000], "latency_ns": [500, 500, 500, 500],
        "adj_to": [0, 0, 200, 0], "err": [0, 0, 0, 0], "kind": ["single"] * 4,
        "point": [0] * 4, "population": [0] * 4, "mode": ["reopen"] * 4,
    })  # fmt: skip
    info = CaptureRunInfo(helper_pid=50, targets={0: {"kind": "single", "pid": 700}})
    out, stats, val = join_trace(samples, tr, info)
    assert out["trace_offset_ns"].tolist()[0] == 100 and out["trace_adj"].tolist()[0] == 0
    assert out["trace_offset_ns"].isna().tolist() == [False, True, False, True]
    assert stats["pid_mismatch"] == 1 and stats["adj_mismatch"] == 1
    assert stats["matched"] == 2 and stats["matched_fraction"] == 0.5
    assert stats["helper_oom_events"] == 4 and stats["oom_events_outside_samples"] == 2
    assert stats["boot_minus_mono_ns"] == off and val["matched_fraction"].tolist() == [0.5]
    # no clock snapshot: the trace clock is taken as monotonic, and says so
    t2 = _trace([(10_100, 0, 50, 700, "t", 0)])
    del t2.packet[0]
    _, s2, _ = join_trace(samples.iloc[:1], parse_trace(t2.SerializeToString()), info)
    assert s2["matched"] == 1 and s2["clock"].startswith("none")


def test_writes_before_the_trace_started_are_counted_apart():
    """`perfetto --background` returns before traced's data sources run: writes from
    before the trace's all_data_sources_started are not misses (and are not left out
    when they did match)."""
    import pandas as pd

    from droidoom.capture.base import CaptureRunInfo
    from droidoom.capture.perfetto import join_trace

    off = BOOT_MINUS_MONO
    t = _trace([(off + 30_100, 0, 50, 700, "t", 0), (off + 40_100, 0, 50, 700, "t", 0)])
    started = t.packet.add(timestamp=off + 25_000)
    started.service_event.all_data_sources_started = True
    tr = parse_trace(t.SerializeToString())
    assert tr.sources_started_ns == off + 25_000
    samples = pd.DataFrame({
        "t_ns": [10_000, 20_000, 30_000, 40_000, 50_000], "latency_ns": [500] * 5,
        "adj_to": [0] * 5, "err": [0] * 5, "kind": ["single"] * 5,
        "point": [0] * 5, "population": [0] * 5, "mode": ["reopen"] * 5,
    })  # fmt: skip
    info = CaptureRunInfo(helper_pid=50, targets={0: {"kind": "single", "pid": 700}})
    _, stats, val = join_trace(samples, tr, info)
    assert stats["writes_before_trace"] == 2 and stats["matched"] == 2
    assert stats["matched_fraction"] == 2 / 3  # the write at 50 us was traced and missed
    assert val["matched_fraction"].tolist() == [2 / 3]
    # without the service event every unmatched write is a miss
    del t.packet[-1]
    _, s2, _ = join_trace(samples, parse_trace(t.SerializeToString()), info)
    assert s2["writes_before_trace"] == 0 and s2["matched_fraction"] == 2 / 5


@pytest.mark.parametrize("skews", [(3000, -300), (0, -2_000_000)])
def test_back_to_back_writes_with_a_skewed_clock_snapshot(skews):
    """Writes 30 ns apart, two clock snapshots that disagree (by 3.3 us, or by 2 ms: their
    reader was preempted between two clock reads) and a warmup event just before the first
    write: each write still gets its own event. (Matching within the snapshots' spread let
    the first write take the warmup's event and every later write its predecessor's; a
    2 ms spread put every event a millisecond away from its write.)"""
    import pandas as pd

    from droidoom.capture.base import CaptureRunInfo
    from droidoom.capture.perfetto import join_trace

    off, pids, n, lat, gap = BOOT_MINUS_MONO, (700, 701, 702), 60, 1000, 30
    t0 = 100_000
    starts = [t0 + i * (lat + gap) for i in range(n)]
    err = [13 if i == 20 else 0 for i in range(n)]  # EACCES: no kernel event
    events = [(off + t0 - 10, 0, 50, 700, "t", 900)]  # the warmup
    events += [(off + s + 500, i % 2, 50, pids[i % 3], "t", i)
               for i, s in enumerate(starts) if not err[i]]  # fmt: skip
    t = _trace(events)
    del t.packet[0]  # replace the snapshot by two that disagree
    for d in skews:
        snap = t.packet.add().clock_snapshot
        snap.clocks.add(clock_id=6, timestamp=t0 + off + d)
        snap.clocks.add(clock_id=3, timestamp=t0)
    tr = parse_trace(t.SerializeToString())
    assert tr.clock_offset_ns() == off + sum(skews) // 2  # the median is off
    samples = pd.DataFrame({
        "t_ns": starts, "latency_ns": [lat] * n, "adj_to": list(range(n)), "err": err,
        "target": [i % 3 for i in range(n)], "kind": ["single"] * n,
        "point": [0] * n, "population": [0] * n, "mode": ["reopen"] * n,
    })  # fmt: skip
    info = CaptureRunInfo(helper_pid=50, targets={i: {"pid": p} for i, p in enumerate(pids)})
    out, stats, _ = join_trace(samples, tr, info)
    assert stats["matched"] == n - 1 and stats["matched_fraction"] == 1.0, stats
    assert stats["pid_mismatch"] == 0 and stats["adj_mismatch"] == 0, stats
    assert stats["inside_write_fraction"] == 1.0, stats
    fitted, snapped = stats["boot_minus_mono_ns"], stats["snapshot_boot_minus_mono_ns"]
    assert abs(fitted - off) <= 500 < abs(snapped - off), stats
    assert "moved" in stats["clock"]
    assert out["trace_offset_ns"].isna().tolist() == [e != 0 for e in err]
    assert (out["trace_adj"].dropna().astype(int) == out["adj_to"][out["err"] == 0]).all()
