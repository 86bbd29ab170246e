"""`droidoom cost TRACE` prices lmkd's kills: the kill marks of every lmkd era (and the
SIGKILL fallback) found in real Perfetto traces and ftrace text, counted per hour and
priced by a real `profile --measure kill` run on this host."""

from __future__ import annotations

import json
import os
import platform
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from droidoom.analysis import cost
from droidoom.traces import kills as trace_kills
from droidoom.traces import perfetto as perfetto_trace
from droidoom.traces.synth import LMKD_PID, SynthSpec, generate

HELPER = Path(__file__).resolve().parents[1] / "droidoom" / "bin" / "x86_64" / "droidoom-helper"
native = pytest.mark.skipif(
    sys.platform != "linux" or platform.machine() != "x86_64" or not HELPER.is_file()
    or os.geteuid() != 0,
    reason="needs Linux x86_64, root and the built helper",
)  # fmt: skip


def _trace(tmp: Path, style: str, duration_s: float = 1800) -> Path:
    data, _ = generate(SynthSpec(seed=3, duration_s=duration_s, lmk_kills=style))
    path = tmp / f"phone-{style or 'none'}.pftrace"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("style, source", [("instant", "atrace"), ("slice", "atrace"),
                                           ("counter", "atrace"), ("signal", "signal")])
def test_every_form_of_lmkd_kill_is_found(tmp_path, style, source):
    """Each kill of the synthetic phone (lmkd's, each followed by the victim's
    sched_process_free) is found once, with its victim, in each form lmkd has marked kills
    with (lowmemorykiller instant, lmk slice, kill_one_process counter; the counter's
    reset to 0 and the slice's end are not kills), or from the SIGKILL lmkd sent."""
    path = _trace(tmp_path, style)
    exits = perfetto_trace.read_trace(path).exits
    found = trace_kills.read_kills(path)
    assert len(exits) > 0 and found.source == source
    assert found.kills["pid"].tolist() == exits["pid"].tolist()
    assert (found.kills["ts_ns"].to_numpy() <= exits["ts_ns"].to_numpy()).all()


def test_no_marks_no_kills(tmp_path):
    """ActivityManager's kills (unmarked, no SIGKILL from lmkd) are not lmkd's."""
    found = trace_kills.read_kills(_trace(tmp_path, ""))
    assert found.kills.empty and found.source == ""


def test_kills_in_ftrace_text(tmp_path):
    """ftrace/atrace text: tracing_mark_write payloads, and SIGKILLs sent by lmkd (a
    SIGKILL from another process, or another signal from lmkd, is not a kill)."""
    line = "{comm}-{pid} ({pid}) [001] .... {ts}: {event}: {fields}\n"
    head = "# tracer: nop\n#\n"
    marks = head + "".join([
        line.format(comm="lmkd", pid=LMKD_PID, ts="100.000100", event="tracing_mark_write",
                    fields=f"C|{LMKD_PID}|kill_one_process|4001"),
        line.format(comm="lmkd", pid=LMKD_PID, ts="100.000400", event="tracing_mark_write",
                    fields=f"C|{LMKD_PID}|kill_one_process|0"),
        line.format(comm="lmkd", pid=LMKD_PID, ts="101.000000", event="tracing_mark_write",
                    fields=f"N|{LMKD_PID}|lowmemorykiller|lmk,4002,8,906,0,0"),
    ])  # fmt: skip
    (tmp_path / "marks.txt").write_text(marks)
    k = trace_kills.read_kills(tmp_path / "marks.txt")
    assert k.source == "atrace" and k.kills["pid"].tolist() == [4001, 4002]
    assert k.kills["ts_ns"].tolist() == [100_000_100_000, 101_000_000_000]
    sig = "sig={sig} errno=0 code=0 comm=app pid={pid} grp=1 res=0"
    signals = head + "".join([
        line.format(comm="lmkd", pid=LMKD_PID, ts="5.0", event="signal_generate",
                    fields=sig.format(sig=9, pid=4003)),
        line.format(comm="lmkd", pid=LMKD_PID, ts="6.0", event="signal_generate",
                    fields=sig.format(sig=15, pid=4004)),
        line.format(comm="init", pid=1, ts="7.0", event="signal_generate",
                    fields=sig.format(sig=9, pid=4005)),
    ])  # fmt: skip
    (tmp_path / "signals.txt").write_text(signals)
    k = trace_kills.read_kills(tmp_path / "signals.txt")
    assert k.source == "signal" and k.kills["pid"].tolist() == [4003]


@native
def test_cost_prices_the_kills_next_to_the_writes(tmp_path):
    """A kill run prices the trace's kills at the processes alive at each kill (kills per
    hour x the line's mean cost there), next to what a write run says of the writes."""
    trace = _trace(tmp_path, "slice")
    runs = []
    for args in (("--measure", "kill", "--writes", "40"), ("--writes", "200")):
        out = tmp_path / f"run-{len(runs)}"
        p = run_cli("profile", "--local", "--quick", *args, "--out", str(out), timeout=300)
        assert p.returncode == 0, p.stderr + p.stdout
        (run,) = [d for d in out.iterdir() if d.is_dir()]
        runs.append(run)
    js = tmp_path / "cost.json"
    p = run_cli("cost", str(trace), "--run", str(runs[0]), "--run", str(runs[1]), "--json",
                str(js))  # fmt: skip
    assert p.returncode == 0, p.stderr + p.stdout
    text = " ".join(p.stdout.split())
    assert "CPU time in these writes per hour" in text and "lmkd's kill calls per hour" in text
    rep = json.loads(js.read_text())
    k = rep["kills"]
    n = len(perfetto_trace.read_trace(trace).exits)
    hours = rep["trace"]["duration_s"] / 3600
    assert k["count"] == n and k["source"] == "atrace"
    assert k["per_hour"] == pytest.approx(n / hours)
    assert f"{n} by lmkd" in text and "kills/hour" in text
    (priced,) = k["runs"]
    by = {e["kind"]: e for e in priced["estimates"]}
    assert set(by) == {"single", "threaded"}  # multiprocess calls fail: no kill to price
    for e in by.values():
        assert e["total_ns"] == pytest.approx(n * e["per_kill_ns"])
        assert e["cpu_ms_per_hour"] == pytest.approx(e["total_ns"] / hours / 1e6)
        assert 1_000 < e["per_kill_ns"] < 10_000_000  # µs..ms, not ns or seconds
    assert [r["run"] for r in rep["runs"]] == [str(runs[1])]  # the writes priced apart


def test_a_kill_run_is_priced_by_its_calls_not_the_reap():
    """lmkd's CPU in a kill is its three calls; the reap is the victim's own exit."""

    df = pd.DataFrame({"device": "d", "kind": "threaded", "mode": "reopen", "point": [0, 0, 1, 1],
                       "population": [0, 0, 100, 100], "stage": "ok", "err": 0,
                       "open_ns": 1_000, "kill_ns": 2_000, "latency_ns": [10_000, 10_000,
                       20_000, 20_000], "reap_ns": 999_999})  # fmt: skip
    (f,) = cost.kill_fits(df, trim=0)
    assert f.intercept_ns == pytest.approx(13_000) and f.slope_ns == pytest.approx(100)
