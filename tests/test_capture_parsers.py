"""Parsers and joins of droidoom.capture on text fixtures (tests/data/capture/).

Fixtures named *_real_* were captured on the development VM (kernel 6.18); the others
are hand-written to the documented layouts (ftrace text across kernel versions,
simpleperf's report --csv / stat --csv / report-sample as printed by its sources).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from droidoom.capture import CaptureRunInfo, build_sources, validation_table
from droidoom.capture.ftrace import FtraceSource
from droidoom.capture.ftrace_join import estimate_clock_offset, join_writes, kernel_writes
from droidoom.capture.perf import PerfSource
from droidoom.capture.perf_parse import (
    attribute,
    base_symbol,
    parse_perf_script,
    parse_report_sample,
    parse_simpleperf_report_csv,
    symbol_table,
)
from droidoom.errors import UsageError
from droidoom.schema import KINDS
from droidoom.traces.ftrace_text import (
    EVENT_COLUMNS,
    add_write_fields,
    parse_cpu_stats,
    parse_raw,
    parse_trace,
    with_ns_timestamps,
)

DATA = Path(__file__).parent / "data" / "capture"


def read(name: str) -> str:
    return (DATA / name).read_text()


# --- ftrace text ------------------------------------------------------------------


def test_ftrace_4_19_pid5_flags4_lost_and_marks():
    ev, h = parse_trace(read("ftrace_4.19_pid5_flags4.txt"))
    assert list(ev.columns) == list(EVENT_COLUMNS)
    assert {c: str(t) for c, t in ev.dtypes.items()} == EVENT_COLUMNS
    assert len(ev) == 9
    assert (h.entries_in_buffer, h.entries_written, h.cpus) == (9, 12, 8)
    assert h.lost_by_cpu == {5: 3} and h.lost_events == 3
    first = ev.iloc[0]
    assert (first.comm, first.pid, first.cpu, first["flags"]) == ("lmkd", 612, 3, "....")
    assert first.ts_ns == 1234_567890_000 and pd.isna(first.tgid)
    assert ev["flags"].iloc[2] == "d..1"
    marks = ev[ev["event"] == "tracing_mark_write"]
    assert list(marks["comm"]) == ["Binder:1234_2", "Binder:1234_2", "<idle>"]
    assert marks["fields"].iloc[2] == "hello world: with colons"
    assert ev.loc[7, "comm"] == "kworker/u16:3-events_unbound" and ev.loc[7, "pid"] == 77
    assert ev.loc[5, "comm"] == "<...>" and ev.loc[5, "pid"] == 25001


def test_ftrace_tgid_column_numbers_and_dashes():
    ev, h = parse_trace(read("ftrace_5.10_pid5_tgid_flags4.txt"))
    assert list(ev["tgid"].astype("float").fillna(-1)) == [5123, 5123, 5123, -1]
    assert h.lost_events == 0 and h.entries_written == 4
    real, _ = parse_trace(read("ftrace_real_6.18_tgid.txt"))  # "(   8260)" padding
    assert (real["tgid"] == 8260).all() and len(real) == 10
    assert set(real["flags"].astype(str)) == {".....", "...1."}


def test_ftrace_pid7_flags5_lost_per_cpu():
    ev, h = parse_trace(read("ftrace_5.15_pid7_flags5_lost.txt"))
    assert (ev["pid"] == 1234567).all() and len(ev) == 5
    assert ev["flags"].iloc[2] == "d..1."
    assert h.lost_by_cpu == {0: 600, 1: 400}
    assert h.entries_written - h.entries_in_buffer == 1000
    w = add_write_fields(ev)
    assert w.loc[1, "oom_pid"] == 1234570 and w.loc[1, "oom_adj"] == -1000  # comm with space
    assert list(w["nr"].astype("float").fillna(-1)) == [1, -1, 1, 1, 1]
    assert w.loc[2, "ret"] == 4 and pd.isna(w.loc[0, "ret"])


def test_ftrace_without_irq_info_and_counter_clock():
    ev, _ = parse_trace(read("ftrace_noirqinfo_counter.txt"))
    assert ev["flags"].isna().all()
    assert list(ev["ts_ns"]) == [987654321, 987654999]  # counters stay raw


def test_raw_zip_gives_ns_and_refuses_mismatch():
    ev, _ = parse_trace(read("ftrace_real_6.18_tgid.txt"))
    raw = parse_raw(read("ftrace_real_6.18_tgid_raw.txt"))
    out, prec = with_ns_timestamps(ev, raw)
    assert prec == "ns"
    assert out["ts_ns"].iloc[2] == 823424499592  # text said 823.424500 (rounded)
    assert (np.abs(out["ts_ns"] - ev["ts_ns"]) <= 500).all()
    bad = raw.copy()
    bad.loc[3, "pid"] = 1
    assert with_ns_timestamps(ev, bad) == (ev, "us")
    assert with_ns_timestamps(ev, raw.iloc[:-1])[1] == "us"


def test_cpu_stats_block():
    text = "== cpu0\nentries: 4\noverrun: 2\ncommit overrun: 0\nbytes: 192\n"
    text += "oldest event ts:   563.441072\ndropped events: 7\n== cpu1\nentries: 0\n"
    st = parse_cpu_stats(text)
    assert st[0]["overrun"] == 2 and st[0]["dropped_events"] == 7 and st[1] == {"entries": 0}


# --- join ---------------------------------------------------------------------------

HELPER, T_SINGLE, T_MULTI = 700, 701, 702


def _line(ts_ns: int, event: str, fields: str, pid: int = HELPER, cpu: int = 0) -> str:
    sec, ns = divmod(ts_ns, 1_000_000_000)
    ts = f"{sec:5d}.{ns // 1000:06d}"
    return f"  droidoom-helper-{pid:<7d} [{cpu:03d}] ..... {ts}: {event}: {fields}"


def _synthetic(base: int = 5_000_000_000):
    """Helper trace + samples: a stdout write, a warmup write, 4 timed writes (one
    whose event was lost, one errored), another process's oom write."""
    lines, rows = [], []

    def write(t0, oom=None, nr=1):
        lines.append(_line(t0, "sys_enter", f"NR {nr} (3, 5600, 2, 0, 0, 0)"))
        if oom:
            lines.append(_line(t0 + 2000, "oom_score_adj_update", oom))
        lines.append(_line(t0 + 4000, "sys_exit", f"NR {nr} = 2"))

    write(base)  # stdout line: no oom event
    write(base + 100_000, f"pid={T_SINGLE} comm=droidoom-helper oom_score_adj=900")  # warmup
    lines.append(_line(base + 150_000, "oom_score_adj_update", "pid=9 comm=x oom_score_adj=0", 9))
    adj = [900, 800, 700, 600]
    kinds = ["single", "single", "multiprocess", "multiprocess"]
    pids = [T_SINGLE, T_SINGLE, T_MULTI, T_MULTI]
    for i in range(4):
        t = base + 200_000 + i * 50_000
        rows.append((t, 20_000, adj[i], kinds[i], 0 if i != 3 else 13))
        if i == 1:
            continue  # event lost
        if i != 3:
            write(t + 3000, f"pid={pids[i]} comm=droidoom-helper oom_score_adj={adj[i]}")
    samples = pd.DataFrame(rows, columns=["t_ns", "latency_ns", "adj_to", "kind", "err"])
    samples = samples.assign(point=0, population=0, mode="reopen")
    samples["kind"] = pd.Categorical(samples["kind"], categories=KINDS)
    info = CaptureRunInfo(
        HELPER,
        {0: {"kind": "single", "pid": T_SINGLE}, 1: {"kind": "multiprocess", "pid": T_MULTI}},
    )
    return "\n".join(lines) + "\n", samples, info


def test_join_matches_only_timed_writes_with_events():
    text, samples, info = _synthetic()
    ev, _ = parse_trace(text)
    kw = kernel_writes(add_write_fields(ev), HELPER, nr_write=1)
    assert len(kw) == 1 + 2  # warmup + 2 timed; the other pid's event is not ours
    out, st = join_writes(samples, kw, info)
    assert list(out["kernel_ns"].astype("float").fillna(-1)) == [4000, -1, 4000, -1]
    assert list(out["kernel_adj"].astype("float").fillna(-1)) == [900, -1, 700, -1]
    assert str(out["kernel_ns"].dtype) == "Int64" and str(out["kernel_adj"].dtype) == "Int16"
    assert st["matched"] == 2 and st["writes_ok"] == 3
    assert st["matched_fraction"] == pytest.approx(2 / 3)
    assert st["pid_mismatch"] == 0 and st["adj_mismatch"] == 0
    assert st["oom_events_outside_samples"] == 1  # the warmup
    val = validation_table(out)
    assert list(val["kind"].astype(str)) == ["single", "multiprocess"]
    assert list(val["matched_fraction"]) == [0.5, 1.0]
    assert list(val["overhead_median_ns"]) == [16000, 16000]


def test_join_flags_wrong_target_pid():
    text, samples, info = _synthetic()
    swapped = CaptureRunInfo(HELPER, {0: {"kind": "single", "pid": T_MULTI}})
    ev, _ = parse_trace(text)
    out, st = join_writes(samples, kernel_writes(add_write_fields(ev), HELPER, 1), swapped)
    # single's event names another pid; multiprocess has no known pid: not checked
    assert st["pid_mismatch"] == 1 and out.loc[0, "kernel_ns"] is pd.NA
    assert out.loc[2, "kernel_ns"] == 4000


def test_join_pairs_by_position_when_microseconds_tie():
    lines = [
        _line(1_000_000_000, "sys_enter", "NR 64 (4, 1, 2, 0, 0, 0)"),
        _line(1_000_000_000, "oom_score_adj_update", "pid=5 comm=t oom_score_adj=1"),
        _line(1_000_000_000, "sys_exit", "NR 64 = 2"),
        _line(1_000_000_000, "sys_enter", "NR 64 (1, 1, 2, 0, 0, 0)"),  # stdout, same us
        _line(1_000_000_000, "sys_exit", "NR 64 = 2"),
    ]
    ev, _ = parse_trace("\n".join(lines))
    kw = kernel_writes(add_write_fields(ev), HELPER, 64)
    assert len(kw) == 1 and kw.loc[0, "enter_ts"] == 1_000_000_000
    # without its enclosing enter (lost) the pair is refused, not borrowed
    ev2, _ = parse_trace("\n".join(lines[1:]))
    kw2 = kernel_writes(add_write_fields(ev2), HELPER, 64)
    assert kw2["enter_ts"].isna().all() and kw2["exit_ts"].isna().all()


def test_boot_clock_offset_is_recovered():
    text, samples, info = _synthetic()
    ev, _ = parse_trace(text)
    kw = kernel_writes(add_write_fields(ev), HELPER, 1)
    off = 12_345_678_901
    shifted = kw.copy()
    for c in ("ts_ns", "key_ts", "enter_ts", "exit_ts"):
        shifted[c] = shifted[c] + off
    est = estimate_clock_offset(samples, shifted)
    assert abs(est - off) < 10_000
    out, st = join_writes(samples, shifted, info, clock_offset_ns=est)
    assert st["matched"] == 2


# --- perf script / simpleperf --------------------------------------------------------


def test_perf_script_real_output():
    ps, fr = parse_perf_script(read("perf_script_real_6.18.txt"))
    assert len(ps) == 8 and (ps["tid"] == 6759).all()
    assert ps["time_ns"].iloc[0] == 626_198868039 and ps["time_ns"].is_monotonic_increasing
    assert fr.groupby("sample").size().tolist() == [14, 13, 12, 11, 11, 8, 2, 1]
    leaf = fr[(fr["sample"] == 0) & (fr["depth"] == 0)].iloc[0]
    assert (leaf.symbol, leaf.dso) == ("copy_mc_enhanced_fast_string", "[kernel.kallsyms]")
    assert fr["symbol"].iloc[13] == "[unknown]" and fr["dso"].iloc[13] == "[unknown]"


def test_perf_script_with_comm_and_cpp_symbols():
    text = (
        "helper 42 10.000000100:\n"
        "\tffffffff8177fdc0 __set_oom_adj.isra.0 ([kernel.kallsyms])\n"
        "\t    55d0 (anonymous namespace)::run(int, char**) (/data/droidoom-helper)\n\n"
        "  43   10.000000200: \n\t 1 [unknown] ([unknown])\n"
    )
    ps, fr = parse_perf_script(text)
    assert list(ps["tid"]) == [42, 43] and list(ps["time_ns"]) == [10_000000100, 10_000000200]
    assert fr["symbol"].iloc[1] == "(anonymous namespace)::run(int, char**)"
    assert fr["dso"].iloc[1] == "/data/droidoom-helper"


def test_base_symbol_strips_clone_suffixes():
    s = pd.Series(["__set_oom_adj.isra.0", "f.constprop.0.isra.0", "g.cold", "h+0x1f", "x.y"])
    assert list(base_symbol(s)) == ["__set_oom_adj", "f", "g", "h", "x.y"]


def test_simpleperf_report_sample():
    ps, fr, extra = parse_report_sample(read("simpleperf_report_sample.txt"))
    assert list(ps["tid"]) == [5123, 5130, 5123]
    assert list(ps["time_ns"]) == [310000150000, 310000200000, 310000250000]
    s0 = fr[fr["sample"] == 0]
    assert list(s0["symbol"]) == [
        "__set_oom_adj.isra.0",
        "oom_score_adj_write",
        "vfs_write",
        "write",
    ]
    assert s0["dso"].iloc[3].endswith("libc.so")
    assert fr[fr["sample"] == 2]["symbol"].iloc[1] == "do_write(int, char const*)"
    assert extra == {"lost_count": 1, "sample_count": 3}


def test_attribute_and_symbol_table():
    ps, fr, _ = parse_report_sample(read("simpleperf_report_sample.txt"))
    writes = pd.DataFrame(
        {
            "t_ns": [310000140000, 310000260000],
            "latency_ns": [20000, 5000],
            "point": [1, 1],
            "population": [800, 800],
            "kind": ["multiprocess", "single"],
        }
    )
    att, counts = attribute(ps[ps["tid"] == 5123], writes, ["population", "kind"])
    assert counts == {"samples": 2, "in_writes": 1, "between_writes": 1, "outside_sweep": 0}
    t = symbol_table(att, fr, ["population", "kind"])
    top = t.iloc[0]
    assert (top.kind, top.symbol, top.self_pct, top.children_pct) == (
        "multiprocess",
        "__set_oom_adj",
        100.0,
        100.0,
    )
    assert set(t["symbol"]) == {"__set_oom_adj", "oom_score_adj_write", "vfs_write", "write"}
    assert (
        t.loc[t["symbol"] == "vfs_write", ["self_pct", "children_pct"]].values == [0, 100]
    ).all()


def test_simpleperf_report_csv_children_rebuilds_symbols_with_commas():
    df, meta = parse_simpleperf_report_csv(read("simpleperf_report_children.csv"))
    assert meta["arch"] == "arm64" and meta["events"][0] == {
        "event": "cpu-clock",
        "samples": 12000,
        "event_count": 600000000,
    }
    assert list(df.columns[:5]) == ["event", "Children", "Self", "Shared Object", "Symbol"]
    assert df.loc[1, "Symbol"] == "__set_oom_adj" and df.loc[1, "Self"] == 78.0
    assert df.loc[3, "Symbol"].endswith("::append(char const*, unsigned long)")
    assert df.loc[3, "AccEventCount"] == 12000000 and df.loc[3, "EventName"] == "cpu-clock"


def test_simpleperf_report_csv_two_events_with_sample_column():
    df, meta = parse_simpleperf_report_csv(read("simpleperf_report_default_n.csv"))
    assert [e["event"] for e in meta["events"]] == ["cpu-clock", "task-clock"]
    assert list(df["event"]) == ["cpu-clock", "cpu-clock", "task-clock"]
    assert list(df["Overhead"]) == [75.0, 25.0, 100.0] and list(df["Sample"]) == [300, 100, 10]
    assert df["Pid"].dtype == "Int64" and df.loc[1, "Symbol"] == "__openat"


# --- sources without a target ---------------------------------------------------------


def test_build_sources_order_and_names():
    assert build_sources(["clock"]) == []
    srcs = build_sources(["perf", "clock", "ftrace", "ftrace"])
    assert [s.name for s in srcs] == ["ftrace", "perf"]
    with pytest.raises(UsageError, match="unknown capture source 'ebpf'"):
        build_sources(["ebpf"])


def test_wrap_composition_keeps_exec_chain():
    from droidoom.capture.base import CaptureContext

    f, p = FtraceSource(), PerfSource()
    f.instance = "/sys/kernel/tracing/instances/droidoom-x"
    p._ctx = CaptureContext("x", "/tmp/w", "x86_64", True)
    p.tool = "perf"
    cmd = p.wrap(f.wrap("exec /bin/helper run plan rec"))
    assert cmd.startswith("exec perf record -q -k mono --no-inherit -e cpu-clock")
    assert "-- sh -c 'echo $$ > /sys/kernel/tracing/instances/droidoom-x/set_event_pid" in cmd
    assert cmd.endswith("&& exec /bin/helper run plan rec'")
