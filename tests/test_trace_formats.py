"""Traces from the field (issue 18): formats told apart by content, trace clocks, losses,
a one-update trace. The ftrace text fixtures were recorded from this machine's kernel by
tests/data/traces/record_ftrace.py; atrace, `atrace -z` and systrace HTML are built from
them the way those tools wrap the same text; Perfetto traces are built with the `perfetto`
wheel's protobuf classes."""

from __future__ import annotations

import base64
import gzip
import zlib
from pathlib import Path

import pytest

from droidoom.errors import DataError
from droidoom.traces import replay
from droidoom.traces.perfetto import read_any

DATA = Path(__file__).parent / "data" / "traces"


def _text(name: str) -> bytes:
    return (DATA / f"ftrace_{name}.txt").read_bytes()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    f = tmp_path / name
    f.write_bytes(data)
    return f


# --------------------------------------------------------------------------- 1. formats


def _html(text: bytes, compressed: bool = False) -> bytes:
    """A systrace HTML page: a JSON block and the ftrace text block (catapult's layout;
    `compressed`: base64 of a zlib stream, as compressed captures are embedded)."""
    body = base64.b64encode(zlib.compress(text)) if compressed else text
    return (b'<!DOCTYPE html>\n<html><head><meta charset="utf-8"/></head><body>\n'
            b'<script class="trace-data" type="application/text">{"traceEvents": []}'
            b"</script>\n<!-- BEGIN TRACE -->\n"
            b'  <script class="trace-data" type="application/text">\n' + body +
            b"\n  </script>\n<!-- END TRACE -->\n</body></html>\n")  # fmt: skip


WRAPPINGS = {
    # catapult's atrace_data_raw starts with a newline (0x0a: a protobuf packet tag)
    "leading-newline.txt": lambda t: b"\n" + t,
    # atrace's capture: its progress line, TRACE:, then the text (first update > 64 KiB)
    "atrace.txt": lambda t: b"capturing trace... done\nTRACE:\n" + t,
    "atrace-z.trace": lambda t: b"capturing trace... done\nTRACE:\n" + zlib.compress(t),
    "atrace-z-bare.trace": lambda t: b"TRACE:\n" + zlib.compress(t),
    "atrace-z.trace.gz": lambda t: gzip.compress(b"TRACE:\n" + zlib.compress(t)),
    "systrace.html": _html,
    "systrace-compressed.html": lambda t: _html(t, compressed=True),
}


@pytest.mark.parametrize("name", sorted(WRAPPINGS))
def test_text_wrappings_are_read_by_content(tmp_path, name):
    text = _text("boot")
    assert text.find(b"oom_score_adj_update:") > 65536  # the first update past 64 KiB
    f = _write(tmp_path, name, WRAPPINGS[name](text))
    tr = read_any(f, allow_truncated=False)
    assert len(tr.oom_events) == 40 and set(tr.oom_events["comm"].astype(str)) == {"sleep"}
    assert tr.oom_events["adj"].tolist()[:3] == [0, 37, 74]  # (i * 37) % 1000
    rt = replay.load(f)  # what `cost` and `profile --scenario replay:` read
    assert len(rt.events) == 40 and rt.duration_ns > 0


def test_leading_newline_text_is_not_a_truncated_perfetto_trace(tmp_path):
    """Before issue 18: "truncated at byte 100 ...", the newline read as a packet tag."""
    f = _write(tmp_path, "atrace_data_raw", b"\n" + _text("mono"))
    assert len(read_any(f, allow_truncated=False).oom_events) == 40


def test_neither_format_still_says_what_it_is(tmp_path):
    f = _write(tmp_path, "trace.json", b'{"traceEvents": []}')
    with pytest.raises(DataError, match="not a Perfetto protobuf trace"):
        read_any(f)
    f = _write(tmp_path, "broken.trace", b"TRACE:\n" + zlib.compress(_text("boot"))[:-50])
    with pytest.raises(DataError, match="compressed stream is cut off"):
        read_any(f)


# --------------------------------------------------------------------------- 2. clocks


@pytest.mark.parametrize("clock", ["counter", "x86-tsc"])
def test_ftrace_text_on_a_clock_that_is_no_time_is_refused(tmp_path, clock):
    """Before issue 18: read as nanoseconds ("1,565,217,391,304 writes/hour", exit 0)."""
    f = _write(tmp_path, "trace.txt", _text(clock))
    with pytest.raises(DataError, match=f"trace_clock {clock} .*integers without a decimal"):
        read_any(f)
    with pytest.raises(DataError, match=f"trace_clock {clock}"):
        replay.load(_write(tmp_path, "atrace.trace", b"TRACE:\n" + zlib.compress(_text(clock))))


@pytest.mark.parametrize("clock", ["boot", "mono"])
def test_ftrace_text_on_a_time_clock_is_nanoseconds(tmp_path, clock):
    ts = read_any(_write(tmp_path, "t.txt", _text(clock))).oom_events["ts_ns"]
    gaps = ts.diff().dropna()
    # 40 writes in a loop: microseconds apart, all within a second
    assert gaps.min() >= 0 and 0 < ts.iloc[-1] - ts.iloc[0] < 1e9


def _pf(bundles, tree: bool = True):
    """A Perfetto trace: lmkd (pid 50) writes; `bundles`: (ftrace_clock, pair or None,
    [(ts, pid, adj)]) per FtraceEventBundle, on CPU 0."""
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    t = pb.Trace()
    if tree:
        pt = t.packet.add(timestamp=1).process_tree
        pt.processes.add(pid=50, ppid=1, cmdline=["/system/bin/lmkd"])
    for clock, pair, events in bundles:
        b = t.packet.add().ftrace_events
        b.cpu = 0
        if clock:
            b.ftrace_clock = clock
        if pair is not None:
            b.ftrace_timestamp, b.boot_timestamp = pair
        for ts, pid, adj in events:
            ev = b.event.add(timestamp=ts, pid=50)
            u = ev.oom_score_adj_update
            u.pid, u.comm, u.oom_score_adj = pid, f"app{pid}", adj
    return t, pb


def test_perfetto_bundle_clock_is_converted_with_its_pair_or_refused(tmp_path):
    from droidoom.traces.perfetto import parse_trace

    boot = [(0, None, [(10_000, 700, 0)])]
    # a bundle on the global clock with its pair: global 500 is boot 1_000_500
    conv = [(2, (500, 1_000_500), [(600, 701, 900), (700, 700, 500)])]
    t, pb = _pf(boot + conv)
    ev = parse_trace(t.SerializeToString()).oom_events
    assert ev["ts_ns"].tolist() == [10_000, 1_000_600, 1_000_700]
    assert ev["pid"].tolist() == [700, 701, 700]
    # the same bundle without its pair: no way to put it on the boot clock
    t, pb = _pf(boot + [(2, None, [(600, 701, 900)])])
    with pytest.raises(DataError, match="ftrace global clock, not the boot clock"):
        parse_trace(t.SerializeToString(), "phone.pftrace")
    t, pb = _pf([(3, None, [(600, 701, 900)])])
    with pytest.raises(DataError, match="local clock"):
        replay.load(_write(tmp_path, "local.pftrace", t.SerializeToString()))


# --------------------------------------------------------------------------- 3. losses


def test_ftrace_text_header_counts_what_the_ring_overwrote(tmp_path):
    """`entries-in-buffer/entries-written: 141/5000`: 4,859 updates lost (before issue 18:
    0, only `[LOST N EVENTS]` lines counted)."""
    head = _text("lossy").split(b"\n", 3)[2].decode()
    assert head.startswith("# entries-in-buffer/entries-written: 141/5000")
    f = _write(tmp_path, "lossy.txt", _text("lossy"))
    tr = read_any(f)
    assert tr.ftrace_overrun == 4859 and tr.losses == 4859
    rt = replay.load(f)
    assert rt.lost == 4859 and rt.summary()["losses"] == {"ftrace_overrun": 4859}
    assert any("lower bounds" in n and "4,859 events overwritten" in n for n in rt.notes())
    assert replay.load(_write(tmp_path, "ok.txt", _text("mono"))).lost == 0


def test_perfetto_losses_of_every_kind_are_counted():
    from droidoom.traces.perfetto import parse_trace

    t, pb = _pf([(0, None, [(1000, 700, 0), (2000, 700, 900)])])
    st = t.packet.add().ftrace_stats  # overrun since boot: the trace's own is END - START
    st.phase = pb.FtraceStats.START_OF_TRACE
    st.cpu_stats.add(cpu=0, overrun=100, dropped_events=0)
    st = t.packet.add().ftrace_stats
    st.phase = pb.FtraceStats.END_OF_TRACE
    st.cpu_stats.add(cpu=0, overrun=130, dropped_events=1)
    for overwritten in (3, 5):  # periodic, cumulative trace_stats: the last one counts
        b = t.packet.add().trace_stats.buffer_stats.add()
        b.chunks_overwritten, b.trace_writer_packet_loss = overwritten, 2
    t.packet.add(previous_packet_dropped=1, first_packet_on_sequence=True)  # a start (uint32 here)
    t.packet.add(previous_packet_dropped=1, trusted_packet_sequence_id=7)  # a loss
    tr = parse_trace(t.SerializeToString())
    assert (tr.ftrace_overrun, tr.ftrace_dropped, tr.chunks_overwritten,
            tr.writer_packet_loss, tr.packets_dropped) == (30, 1, 5, 2, 1)  # fmt: skip
    assert tr.losses == 39 and tr.summary()["losses"] == 39
    assert "5 traced buffer chunks overwritten (ring buffer wrapped)" in tr.loss_text()


@pytest.fixture(scope="module")
def lossy_replay(tmp_path_factory) -> tuple[Path, Path, str]:
    """(trace, run dir, stderr) of a real replay of the lossy capture on this host."""
    from conftest import run_cli

    tmp = tmp_path_factory.mktemp("lossy")
    trace = _write(tmp, "lossy.txt", _text("lossy"))
    out = tmp / "runs"
    p = run_cli("profile", "--local", "--scenario", f"replay:{trace}", "--compress", "0",
                "--population", "0", "--out", str(out))  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = [d for d in out.iterdir() if d.is_dir()]
    return trace, run, p.stdout + p.stderr


def test_losses_are_printed_stored_and_make_estimates_lower_bounds(lossy_replay, tmp_path):
    import json

    from conftest import run_cli

    trace, run, output = lossy_replay
    flat = " ".join(output.split())
    assert "the trace lost events (4,859 events overwritten" in flat  # replay says it
    meta = json.loads((run / "run.json").read_text())
    assert meta["replay"]["lost"] == 4859  # and run.json keeps it
    assert meta["replay"]["losses"] == {"ftrace_overrun": 4859}
    js = tmp_path / "cost.json"
    p = run_cli("cost", str(trace), "--run", str(run), "--json", str(js))
    assert p.returncode == 0, p.stderr
    flat = " ".join((p.stdout + p.stderr).split())
    assert "lower bounds" in flat and ">= " in p.stdout and "4,859" in flat
    rep = json.loads(js.read_text())
    assert rep["trace"]["lost"] == 4859 and rep["runs"][0]["estimates"][0]["lower_bound"]


# --------------------------------------------------------------------------- 4. one update


def test_a_single_update_says_what_cannot_be_estimated(lossy_replay, tmp_path):
    """Before issue 18: `ms/hour nan`, `95% CI nan..nan`, exit 0."""
    import json

    from conftest import run_cli

    _, run, _ = lossy_replay  # any run prices the write
    lines = _text("mono").decode().splitlines(keepends=True)
    first = next(i for i, x in enumerate(lines) if "oom_score_adj_update:" in x)
    one = _write(tmp_path, "one.txt", "".join(lines[: first + 1]).encode())
    js = tmp_path / "cost.json"
    p = run_cli("cost", str(one), "--run", str(run), "--json", str(js))
    assert p.returncode == 0, p.stderr
    out = " ".join((p.stdout + p.stderr).split())
    assert "nan" not in out
    assert "a single update: with no interval between updates, neither writes per hour" in out
    assert "per hour: cannot be estimated" in out and "its write (threaded) cost" in out
    e = json.loads(js.read_text())["runs"][0]["estimates"][0]
    assert e["cpu_ms_per_hour"] is None and e["ci_ms_per_hour"] is None and e["total_ns"] > 0
