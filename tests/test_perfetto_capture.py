"""`--capture perfetto` end to end: a real adb server, the loopback peer running commands
as the shell uid (2000, like a production phone), its `perfetto` stand-in talking to the
root traced stand-in that records this host's oom_score_adj_update tracepoint.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from adb_env import SHELL_UID, ShellUidPeer, cli_env, make_device_dir
from conftest import run_cli

from droidoom.traces.perfetto import read_trace

pytest_plugins = ["perfetto_env"]

PHONE = {
    "ro.product.model": "Pixel 7",
    "ro.product.device": "panther",
    "ro.build.version.sdk": "34",
    "ro.build.version.release": "14",
    "ro.build.type": "user",
    "ro.debuggable": "0",
    "init.svc.traced": "running",
}


@pytest.fixture
def shell_dir():
    d = make_device_dir(uid=SHELL_UID)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _peer(adb_peer_factory, props):
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv")
    return adb_peer_factory(props, peer_class=ShellUidPeer)


def _run(out: Path) -> Path:
    (run,) = [d for d in out.iterdir() if d.is_dir()]
    return run


def _still_ours(pid: int, trace_name: str) -> bool:
    """Is `pid` still the perfetto that wrote `trace_name`? As droidoom asks it: by its
    cmdline. `kill -0` also succeeds on a zombie not yet reaped and on a pid reused by
    another process (pid_max 32768 here, a kernel build beside: it failed once in CI)."""
    try:
        return trace_name in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def test_profile_quick_with_perfetto_matches_every_write(traced, adb_peer_factory, shell_dir,
                                                         tmp_path):  # fmt: skip
    """No root: every planned write is recorded and each has its kernel event, with the
    pid and adj the helper wrote, inside (or within tolerance of) its write window."""
    peer = _peer(adb_peer_factory, PHONE)
    out = tmp_path / "runs"
    p = run_cli("profile", "--serial", peer.serial, "--quick", "--capture", "clock,perfetto",
                "--out", str(out), env=cli_env(peer.server, shell_dir))  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    run = _run(out)
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "complete", meta.get("reason")
    assert meta["writes_recorded"] == meta["writes_planned"] > 0
    assert meta["helper_facts"]["uid"] == str(SHELL_UID)
    pm = meta["captures"]["perfetto"]
    assert "error" not in pm and "skipped" not in pm, pm
    assert pm["flag"] == "--background-wait"
    assert pm["matched_fraction"] == 1.0, pm
    assert pm["adj_mismatch"] == 0 and pm["pid_mismatch"] == 0
    assert pm["lost_events"] == 0 and pm["trace"]["truncated_at"] is None
    assert "userdebug" in pm["syscall_durations"]
    assert pm["inside_write_fraction"] > 0.9, pm  # the event lies inside its write
    s = pd.read_parquet(run / "samples.parquet")
    ok = s[s["err"] == 0]
    assert ok["trace_adj"].notna().all()
    assert (ok["trace_adj"].astype(int) == ok["adj_to"].astype(int)).all()
    val = pd.read_parquet(run / "perfetto_validation.parquet")
    assert set(val["kind"].astype(str)) == set(s["kind"].astype(str))
    assert (val["matched_fraction"] == 1.0).all()
    # the trace is kept, a real Perfetto trace: the helper's events + this host's processes
    trace = read_trace(run / "trace.pftrace")
    assert len(trace.processes) > 10 and trace.clock_offset_ns() is not None
    events = pd.read_parquet(run / "perfetto_events.parquet")
    assert len(events) == pm["helper_oom_events"] >= len(ok)
    assert events["writer_tid"].nunique() == 1  # the helper's writer thread only
    assert set(events["pid"]) >= {int(t["pid"]) for t in meta["targets"] if t.get("pid")}
    # exported next to a system trace: writes sit on the phone's BOOTTIME
    pf = tmp_path / "run.pftrace"
    p = run_cli("export", str(run), "--perfetto", str(pf))
    assert p.returncode == 0 and "boottime" in p.stdout, p.stdout + p.stderr
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    exported = pb.Trace.FromString(pf.read_bytes())
    snap = next(x.clock_snapshot for x in exported.packet if x.HasField("clock_snapshot"))
    clocks = {c.clock_id: c.timestamp for c in snap.clocks}
    assert clocks[6] - clocks[3] == pm["boot_minus_mono_ns"]
    begins = [x for x in exported.packet if x.HasField("track_event")
              and x.track_event.type == pb.TrackEvent.TYPE_SLICE_BEGIN]  # fmt: skip
    assert len(begins) == len(s)
    assert min(b.timestamp for b in begins) == s["t_ns"].min() + pm["boot_minus_mono_ns"]
    # nothing left behind on the "phone"
    assert not Path(pm["trace_file"]).exists()
    assert not _still_ours(pm["perfetto_pid"], Path(pm["trace_file"]).name)


def test_android_9_falls_back_with_a_reason(traced, adb_peer_factory, shell_dir, tmp_path):
    peer = _peer(adb_peer_factory, {**PHONE, "ro.build.version.sdk": "28",
                                    "ro.build.version.release": "9"})  # fmt: skip
    out = tmp_path / "runs"
    p = run_cli("profile", "--serial", peer.serial, "--quick", "--capture", "clock,perfetto",
                "--out", str(out), env=cli_env(peer.server, shell_dir))  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    meta = json.loads((_run(out) / "run.json").read_text())
    assert meta["status"] == "complete"
    why = meta["captures"]["perfetto"]["skipped"]
    assert "API 28" in why and "Android 10" in why
    assert "capture perfetto skipped" in p.stdout + p.stderr


def test_traced_off_falls_back_with_the_fix(adb_peer_factory, shell_dir, tmp_path):
    """Android 10 with traced disabled (non-Pixel default): skip and say how to enable it."""
    peer = _peer(adb_peer_factory, {**PHONE, "ro.build.version.sdk": "29",
                                    "init.svc.traced": "stopped"})  # fmt: skip
    out = tmp_path / "runs"
    p = run_cli("profile", "--serial", peer.serial, "--quick", "--capture", "clock,perfetto",
                "--out", str(out), env=cli_env(peer.server, shell_dir))  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    why = json.loads((_run(out) / "run.json").read_text())["captures"]["perfetto"]["skipped"]
    assert "persist.traced.enable" in why


def test_perfetto_failure_is_reported_not_a_disconnect(adb_peer_factory, shell_dir, tmp_path,
                                                       monkeypatch):  # fmt: skip
    """traced unreachable: perfetto's own message and the fix reach the user, like a
    failed ftrace arm (the run stops before spawning anything)."""
    monkeypatch.setenv("PERFETTO_CONSUMER_SOCK_NAME", str(tmp_path / "no-such-socket"))
    peer = _peer(adb_peer_factory, PHONE)
    out = tmp_path / "runs"
    p = run_cli("profile", "--serial", peer.serial, "--quick", "--capture", "clock,perfetto",
                "--out", str(out), env=cli_env(peer.server, shell_dir))  # fmt: skip
    text = p.stdout + p.stderr
    assert p.returncode == 1, text
    assert "Failed to connect to the traced service" in text, text  # perfetto's own words
    assert "omit --capture perfetto" in text and "disconnected" not in text, text
    assert not list(Path("/data/misc/perfetto-traces").glob("droidoom-*127.0.0.1_*"))


def test_standin_behaves_like_a_production_phone(traced, adb_peer_factory):
    """The stand-in refuses what a user build refuses (so droidoom cannot get it wrong)."""
    peer = _peer(adb_peer_factory, {**PHONE, "ro.build.version.sdk": "30"})
    res = peer.server.run("-s", peer.serial, "shell", "perfetto --no-such-option")
    assert res.returncode != 0 and b"Usage" in res.stdout + res.stderr
    res = peer.server.run("-s", peer.serial, "shell",
                          "echo 'buffers { size_kb: 1024 }' | "
                          "perfetto --txt -c - -o /data/local/tmp/x.pftrace -D")  # fmt: skip
    assert res.returncode != 0 and b"Permission denied" in res.stdout + res.stderr
    res = peer.server.run("-s", peer.serial, "shell",
                          "perfetto --txt -c /data/local/tmp/cfg -o "
                          "/data/misc/perfetto-traces/x.pftrace -D")  # fmt: skip
    assert res.returncode != 0 and b"stdin" in res.stdout + res.stderr
    res = peer.server.run("-s", peer.serial, "shell",
                          "echo 'bogus_field: 1' | perfetto --txt -c - "
                          "-o /data/misc/perfetto-traces/droidoom-test-bad.pftrace -D")  # fmt: skip
    assert res.returncode != 0 and b"config is invalid" in res.stdout + res.stderr
    Path("/data/misc/perfetto-traces/droidoom-test-bad.pftrace").unlink(missing_ok=True)


def test_older_perfetto_without_background_wait(traced, adb_peer_factory, shell_dir, tmp_path,
                                                monkeypatch):  # fmt: skip
    """A perfetto without -D (it would reject the flag): droidoom uses --background and
    still matches every write."""
    monkeypatch.setenv("PERFETTO_STANDIN_OLD", "1")
    peer = _peer(adb_peer_factory, {**PHONE, "ro.build.version.sdk": "30"})
    res = peer.server.run("-s", peer.serial, "shell", "perfetto -D --txt -c - -o x")
    assert res.returncode != 0  # the old build really lacks the flag
    out = tmp_path / "runs"
    p = run_cli("profile", "--serial", peer.serial, "--quick", "--capture", "clock,perfetto",
                "--out", str(out), env=cli_env(peer.server, shell_dir))  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    meta = json.loads((_run(out) / "run.json").read_text())
    pm = meta["captures"]["perfetto"]
    # --background returns before tracing starts: on a loaded host the first writes can
    # precede it; they are counted apart, and every write after it is matched.
    assert pm.get("flag") == "--background" and pm["matched_fraction"] == 1.0, pm
    assert pm["matched"] + pm["writes_before_trace"] == pm["writes_ok"], pm
    assert pm["trace"]["sources_started_ns"], pm


def _quick_beside_standin(env: dict[str, str], adb_peer_factory, shell_dir, tmp_path,
                          monkeypatch) -> tuple[subprocess.CompletedProcess, Path]:
    """`profile --quick --capture clock,perfetto` on a phone peer, beside a traced stand-in
    started with `env` (its settings) and stopped after: (the command, its --out folder)."""
    from perfetto_env import TracedStandin  # the module is a pytest plugin here: import late

    traced = TracedStandin().start(env=env)
    try:
        monkeypatch.setenv(*traced.env_item)
        peer = _peer(adb_peer_factory, PHONE)
        out = tmp_path / "runs"
        p = run_cli("profile", "--serial", peer.serial, "--quick", "--capture",
                    "clock,perfetto", "--out", str(out),
                    env=cli_env(peer.server, shell_dir))  # fmt: skip
    finally:
        traced.stop()
    return p, out


def test_lost_events_are_reported(adb_peer_factory, shell_dir, tmp_path, monkeypatch):
    """A kernel buffer too small for the run: the trace says events were lost, run.json
    carries the count and a warning, and the writes without an event stay unmatched."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    p, out = _quick_beside_standin({"TRACED_STANDIN_KERNEL_BUFFER_KB": "8"}, adb_peer_factory,
                                   shell_dir, tmp_path, monkeypatch)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    meta = json.loads((_run(out) / "run.json").read_text())
    assert meta["status"] == "complete" and meta["writes_recorded"] == meta["writes_planned"]
    pm = meta["captures"]["perfetto"]
    assert pm["lost_events"] > 0 and "lost events" in pm["warning"], pm
    assert pm["trace"]["ftrace_dropped"] + pm["trace"]["ftrace_overrun"] > 0
    assert 0 < pm["matched_fraction"] < 0.95
    assert pm["adj_mismatch"] == 0  # what did match is right
    # under 95% matched: said loudly, in the run's terminal and in the report (text, HTML)
    loud = "OF THE WRITES MATCHED THEIR KERNEL EVENT"
    assert f"ONLY {pm['matched_fraction']:.1%} {loud}" in " ".join(p.stdout.split())
    html = tmp_path / "r.html"
    r = run_cli("report", str(_run(out)), "--html", str(html))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"perfetto (run {meta['run_id']}): ONLY" in " ".join(r.stdout.split()), r.stdout
    assert f"<p class='warn'><b>perfetto (run {meta['run_id']}): ONLY" in html.read_text()


def test_stop_signals_only_our_perfetto(tmp_path):
    """Safety: the pid perfetto printed is signalled only while its cmdline still names our
    trace file; a pid that now belongs to another process is left alone."""
    import subprocess as sp
    import sys

    from droidoom.capture.base import CaptureContext
    from droidoom.capture.perfetto import PerfettoSource
    from droidoom.targets.local import LocalTarget

    ctx = CaptureContext(run_id="RUN1", workdir=str(tmp_path), abi="x86_64", root=True)
    sleep = "import time; time.sleep(60)"
    other = sp.Popen([sys.executable, "-c", sleep, "someone-else"])
    ours = sp.Popen([sys.executable, "-c", sleep, "-o", "/x/droidoom-RUN1.pftrace"])
    try:
        src = PerfettoSource()
        src._ctx, src.remote = ctx, str(tmp_path / "droidoom-RUN1.pftrace")
        src.pid = other.pid  # perfetto exited and its pid was reused
        src.disarm(LocalTarget())
        assert other.poll() is None and src.pid is None
        src.pid = ours.pid
        assert src._stop(LocalTarget()) == ""
        assert ours.wait(10) == -15  # SIGTERM
    finally:
        for p in (other, ours):
            p.kill()
            p.wait()


def test_perfetto_and_ftrace_agree_on_a_rooted_phone(traced, adb_peer_factory, device_dir,
                                                     tmp_path):  # fmt: skip
    """Root (userdebug): both captures in one run record each write's event; they agree
    on the adj, and perfetto's event lies inside ftrace's write syscall."""
    peer = adb_peer_factory({**PHONE, "ro.build.type": "userdebug", "ro.debuggable": "1"})
    out = tmp_path / "runs"
    p = run_cli("profile", "--serial", peer.serial, "--quick", "--capture",
                "clock,ftrace,perfetto", "--out", str(out),
                env=cli_env(peer.server, device_dir))  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    run = _run(out)
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "complete", meta.get("reason")
    pm, fm = meta["captures"]["perfetto"], meta["captures"]["ftrace"]
    assert pm["matched_fraction"] == 1.0 and fm["matched_fraction"] == 1.0, (pm, fm)
    s = pd.read_parquet(run / "samples.parquet")
    both = s[s["trace_adj"].notna() & s["kernel_adj"].notna()]
    assert len(both) == len(s[s["err"] == 0])
    assert (both["trace_adj"].astype(int) == both["kernel_adj"].astype(int)).all()


def test_traced_standin_restores_tracefs_when_stopped(tmp_path):
    """The daemon's tracefs instance goes away with it, even mid-session."""
    if os.geteuid() != 0 or not os.path.isdir("/sys/kernel/tracing/instances"):
        pytest.skip("needs root and tracefs instances")
    import subprocess as sp
    import sys

    from perfetto_env import TracedStandin

    tool = Path(__file__).parent / "peer_tools" / "perfetto.py"
    traced = TracedStandin().start()
    cfg = ('buffers { size_kb: 1024 } data_sources { config { name: "linux.ftrace" '
           'ftrace_config { ftrace_events: "oom/oom_score_adj_update" } } }')  # fmt: skip
    mine = f"perfetto-standin-{traced.proc.pid}-"
    try:
        p = sp.run([sys.executable, str(tool), "--txt", "-c", "-", "-o",
                    str(tmp_path / "t.pftrace"), "-D"], input=cfg, capture_output=True,
                   text=True, env={**os.environ, traced.env_item[0]: traced.env_item[1]},
                   timeout=60)  # fmt: skip
        assert p.returncode == 0 and p.stdout.strip().isdigit(), p.stderr
        client = int(p.stdout)
        live = [d for d in os.listdir("/sys/kernel/tracing/instances") if d.startswith(mine)]
        assert len(live) == 1
    finally:
        traced.stop()
    assert not [d for d in os.listdir("/sys/kernel/tracing/instances") if d.startswith(mine)]
    for _ in range(100):  # and the client gives up, like perfetto when traced goes away
        if not Path(f"/proc/{client}").exists():
            break
        time.sleep(0.05)
    else:
        os.kill(client, 9)
        raise AssertionError("the perfetto stand-in outlived traced")


@pytest.mark.parametrize("skew_ns", [20_000, 2_000_000])
def test_a_clock_snapshot_off_is_overruled_by_the_writes(adb_peer_factory, shell_dir, tmp_path,
                                                         monkeypatch, skew_ns):  # fmt: skip
    """The trace's only clock snapshot is off by 20 us or 2 ms (traced preempted between
    its clock reads): the offset is found from the writes' pid and adj sequence, >= 99% of
    writes match their own event, and run.json and the terminal say how the offset was
    found. (Fitting near the snapshot matched 35-45%, and nothing warned.)"""
    if os.geteuid() != 0 or not os.path.isdir("/sys/kernel/tracing/instances"):
        pytest.skip("the traced stand-in needs root and tracefs instances")
    p, out = _quick_beside_standin({"TRACED_STANDIN_SNAPSHOT_SKEW_NS": str(skew_ns)},
                                   adb_peer_factory, shell_dir, tmp_path, monkeypatch)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    run = _run(out)
    pm = json.loads((run / "run.json").read_text())["captures"]["perfetto"]
    assert pm["trace"]["clock_snapshots"] == 1
    assert pm["matched_fraction"] >= 0.99 and pm["adj_mismatch"] == 0, pm
    assert pm["inside_write_fraction"] > 0.9, pm
    assert pm["clock_source"] == "matched writes", pm
    assert abs(pm["snapshot_error_ns"] - skew_ns) < 5_000, pm
    text = " ".join((p.stdout + p.stderr).split())
    assert "snapshot was off by" in text and "matched writes" in text, text
    assert "ONLY" not in text
    s = pd.read_parquet(run / "samples.parquet")
    ok = s[(s["err"] == 0) & s["trace_adj"].notna()]
    assert (ok["trace_adj"].astype(int) == ok["adj_to"].astype(int)).all()


def test_a_replay_with_perfetto_matches_each_write_to_its_process(traced, adb_peer_factory,
                                                                  shell_dir, tmp_path):  # fmt: skip
    """A replay writes to one target per replayed process: each write's expected pid is
    its own target's (the samples' `target`), not one pid per kind, so every write
    matches its event and none counts as a pid mismatch."""
    from droidoom.traces.synth import SynthSpec, generate

    data, truth = generate(SynthSpec(seed=4, duration_s=60))
    path = tmp_path / "phone.pftrace"
    path.write_bytes(data)
    peer = _peer(adb_peer_factory, PHONE)
    out = tmp_path / "runs"
    p = run_cli("profile", "--serial", peer.serial, "--scenario", f"replay:{path}",
                "--compress", "0", "--population", "0", "--capture", "clock,perfetto",
                "--out", str(out), env=cli_env(peer.server, shell_dir))  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    run = _run(out)
    meta = json.loads((run / "run.json").read_text())
    pm = meta["captures"]["perfetto"]
    assert len(meta["targets"]) == truth["pid"].nunique() > 10
    assert pm["matched_fraction"] == 1.0 and pm["pid_mismatch"] == 0, pm
    assert pm["adj_mismatch"] == 0, pm
    s = pd.read_parquet(run / "samples.parquet")
    assert len(s) == len(truth) and s["trace_adj"].notna().all()
