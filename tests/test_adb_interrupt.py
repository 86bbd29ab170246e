"""Interrupted runs over adb: unplug (peer killed), adb server restart, a stalled device,
Ctrl-C and a killed host. Each ends within seconds with a clear message and a partial
run, leaves no helper or population process, and `droidoom recover` brings home what the
device kept once it is back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from adb_env import AdbServer, cli_env
from conftest import default_signals, run_cli, wait_no_helpers

import droidoom
from droidoom import schema
from droidoom.cli.profile import device_hint
from droidoom.protocol import HEADER_SIZE, RECORD_SIZE
from droidoom.run import runner
from droidoom.spec import ProfileSpec
from droidoom.targets import adb, adb_conn
from droidoom.targets.select import AdbServer as Server

#: A paced sweep that lasts ~12 s (2 points x 3 kinds x 4000 writes at 2000/s).
LONG = ["--population", "0,200", "--writes", "4000", "--rate", "2000"]
#: Generous bound for "ends within seconds": a hang would hit the timeout instead.
PROMPT = 30.0


def start_profile(serial: str, env: dict, out: Path, longer: int = 1) -> subprocess.Popen:
    """`profile` of LONG in the background (`longer` times as many writes)."""
    args = [*LONG[:3], str(int(LONG[3]) * longer), *LONG[4:]]
    return subprocess.Popen(
        [sys.executable, "-m", "droidoom", "profile", "--serial", serial, *args, "-o", str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )


def wait_recording(device_dir: str, proc=None, writes: int = 500, timeout: float = 60) -> Path:
    """The device-side records file once it holds `writes` records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for f in Path(device_dir).glob("records-*.bin"):
            if f.stat().st_size >= HEADER_SIZE + writes * RECORD_SIZE:
                return f
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"profile ended early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("the helper never started recording")


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[str, str, float]:
    t0 = time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return out, err, time.monotonic() - t0


def only_run(out: Path) -> Path:
    (run,) = [d for d in out.iterdir() if d.is_dir()]
    return run


def meta_of(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


def records_in(path: Path) -> int:
    return (path.stat().st_size - HEADER_SIZE) // RECORD_SIZE


def check_recovered(run: Path, n: int) -> None:
    df = droidoom.load(run)
    assert len(df) == n > 0
    assert df["seq"].is_unique and (df["err"] == 0).all()
    assert set(df["kind"].astype(str)) <= {"single", "threaded", "multiprocess"}
    meta = meta_of(run)
    assert meta["status"] == "partial" and meta["writes_recorded"] == n
    assert meta["recovered"]["writes"] == n


def test_unplug_mid_run_then_recover(adb_peer_factory, device_dir, tmp_path):
    with AdbServer() as srv:
        peer = adb_peer_factory(server=srv)
        env = cli_env(srv, device_dir)
        proc = start_profile(peer.serial, env, tmp_path)
        try:
            rec = wait_recording(device_dir, proc)
            peer.kill()  # the cable is pulled: adbd and everything it ran are gone
        finally:
            out, err, elapsed = finish(proc)
        assert proc.returncode == 1, err
        assert elapsed < PROMPT
        assert "Traceback" not in err
        assert "disconnected" in out and "partial" in out
        assert f"droidoom recover --serial {peer.serial}" in out
        assert not wait_no_helpers()
        run = only_run(tmp_path)
        meta = meta_of(run)
        assert meta["status"] == "partial" and "disconnected" in meta["reason"]
        assert not (run / "samples.parquet").exists()  # nothing could be pulled
        n = records_in(rec)

        adb_peer_factory(server=srv, port=peer.port)  # the phone comes back
        # Serial and device directory are taken from run.json.
        p = run_cli("recover", str(run), env=cli_env(srv))
        assert p.returncode == 0, p.stderr
        assert f"recovered {n} writes" in p.stdout
        check_recovered(run, n)
        assert not rec.exists() and not list(Path(device_dir).glob("plan-*"))
        p = run_cli("recover", "--serial", peer.serial, "-o", str(tmp_path), env=env)
        assert p.returncode == 0 and "holds no records" in p.stdout


def test_adb_server_restart_mid_run_then_recover(adb_peer_factory, device_dir, tmp_path):
    srv = AdbServer().start()
    srv2 = None
    try:
        peer = adb_peer_factory(server=srv)
        proc = start_profile(peer.serial, cli_env(srv, device_dir), tmp_path)
        try:
            rec = wait_recording(device_dir, proc)
            srv.kill()  # `adb kill-server` while a run streams through it
        finally:
            out, err, elapsed = finish(proc)
        assert proc.returncode == 1, err
        assert elapsed < PROMPT and "Traceback" not in err
        assert "adb server" in out and "stopped" in out
        assert not wait_no_helpers()  # adbd (the peer) hung up the helper with its stream
        run = only_run(tmp_path)
        assert meta_of(run)["status"] == "partial"
        n = records_in(rec)

        srv2 = AdbServer(port=srv.port).start()  # the server comes back on its port
        srv2.connect(peer)
        p = run_cli("recover", "--serial", peer.serial, "-o", str(tmp_path),
                    env=cli_env(srv2, device_dir))  # fmt: skip
        assert p.returncode == 0, p.stderr
        assert f"recovered {n} writes" in p.stdout
        check_recovered(run, n)
    finally:
        srv.kill()
        if srv2 is not None:
            srv2.disconnect(peer)
            srv2.kill()


def test_ctrl_c_over_adb_keeps_the_samples(adb_peer, device_dir, tmp_path):
    proc = start_profile(adb_peer.serial, cli_env(adb_peer.server, device_dir), tmp_path)
    try:
        wait_recording(device_dir, proc)
        proc.send_signal(signal.SIGINT)
    finally:
        out, err, elapsed = finish(proc)
    assert proc.returncode == 130, err
    assert elapsed < PROMPT and "Traceback" not in err
    run = only_run(tmp_path)
    meta = meta_of(run)
    assert meta["status"] == "partial" and "Ctrl-C" in meta["reason"]
    assert meta["helper_exit"] == 130  # stdin EOF reached the helper: it stopped in order
    df = droidoom.load(run)
    assert 0 < len(df) < 2 * 3 * 4000
    assert not wait_no_helpers()
    # The device keeps the records file: the last word says how to fetch and tidy it.
    last = out.strip().splitlines()[-1]
    assert f"`droidoom recover --serial {adb_peer.serial} {run}`" in last, out
    # The samples were pulled; recover finds nothing new and tidies the device.
    p = run_cli("recover", str(run), env=cli_env(adb_peer.server, device_dir))
    assert p.returncode == 0 and f"already has all {len(df)} writes" in p.stdout
    assert not list(Path(device_dir).glob("records-*"))


def test_killed_host_takes_the_helper_with_it(adb_peer, device_dir, tmp_path):
    """SIGKILL of droidoom itself: no stdin EOF, no cleanup code; the adb session closes
    and the helper must not outlive it."""
    proc = start_profile(adb_peer.serial, cli_env(adb_peer.server, device_dir), tmp_path)
    try:
        wait_recording(device_dir, proc)
        proc.kill()
    finally:
        finish(proc)
    assert not wait_no_helpers(timeout=10)


def test_stalled_device_times_out_instead_of_hanging(adb_peer, device_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(runner, "LINE_TIMEOUT", 3.0)
    monkeypatch.setattr(adb_conn, "CALL_TIMEOUT", 3.0)
    t = adb.AdbTarget(adb_peer.serial, server=Server("127.0.0.1", adb_peer.server.port),
                      workdirs=(device_dir,))  # fmt: skip
    spec = ProfileSpec(populations=(0, 200), writes=4000, rate=2000.0)

    def freeze():
        wait_recording(device_dir)
        os.kill(adb_peer.pid, signal.SIGSTOP)  # the device stops answering, link stays up

    thread = threading.Thread(target=freeze, daemon=True)
    thread.start()
    t0 = time.monotonic()
    try:
        res = runner.profile(t, spec, tmp_path)
    finally:
        thread.join(60)
        os.kill(adb_peer.pid, signal.SIGCONT)
    assert time.monotonic() - t0 < 12 + PROMPT
    assert res.status == "partial"
    assert "no output for 3 s" in res.meta["reason"] and "silent" in res.meta["reason"]
    assert not wait_no_helpers(timeout=20)  # once awake, adbd hangs up the helper


@pytest.mark.parametrize("props", [{"ro.product.cpu.abi": "mips", "ro.product.cpu.abilist": ""}])
def test_unsupported_abi_is_a_clear_error(adb_peer_factory, device_dir, tmp_path, props):
    peer = adb_peer_factory(props)
    p = run_cli("profile", "--serial", peer.serial, "--quick", "-o", str(tmp_path),
                env=cli_env(peer.server, device_dir))  # fmt: skip
    assert p.returncode == 1 and "ABI 'mips' has no droidoom helper" in p.stderr
    assert "Traceback" not in p.stderr


def hint_for(status: str, samples: int, on_device: int | None, notices=()) -> str | None:
    df = schema.empty() if not samples else pd.DataFrame({"seq": range(samples)})
    meta = {"writes_on_device": on_device, "notices": list(notices)}
    return device_hint("emu-5554", runner.RunResult(Path("/r/run 1"), status, df, meta))


def test_the_last_word_over_adb_names_recover_or_clean():
    assert hint_for("complete", 10, 10) is None  # a complete run removed its device files
    for samples, on_device in ((0, 5), (5, 5), (3, None)):  # records stay on the device
        hint = hint_for("partial", samples, on_device)
        assert "`droidoom recover --serial emu-5554 /r/run 1`" in hint
    hint = hint_for("partial", 0, 0)  # stopped before a record: only the files to tidy
    assert "`droidoom clean --serial emu-5554`" in hint and "recover" not in hint
    hint = hint_for("complete", 5, 5, ["cleanup: could not remove /x/records-1.bin ..."])
    assert "`droidoom clean --serial emu-5554`" in hint
