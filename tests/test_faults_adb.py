"""Faults over adb (issue 13.1, 13.5, 13.6) with a real adb server and loopback peers:
a farm phone unplugged mid-run, two runs on one phone, the link dropping during cleanup.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from adb_env import cli_env
from conftest import default_signals, run_cli, wait_no_helpers
from test_adb_interrupt import finish, records_in, start_profile, wait_recording
from test_farm import toml_inventory

import droidoom
from droidoom.run import runner
from droidoom.spec import ProfileSpec
from droidoom.targets.adb import AdbTarget
from droidoom.targets.select import AdbServer as Server


def test_farm_unplugged_phone_keeps_its_run_and_recover_fills_it(adb_peer_factory, tmp_path):
    peers = [adb_peer_factory({"ro.product.model": f"Pixel {i}"}) for i in range(3)]
    srv = peers[0].server
    workdirs = [tmp_path / f"dev{i}" for i in range(3)]
    inv = toml_inventory(
        tmp_path / "farm.toml", [f"127.0.0.1:{srv.port}"],
        [{"serial": p.serial, "workdir": str(w)} for p, w in zip(peers, workdirs, strict=True)],
    )  # fmt: skip
    out = tmp_path / "runs"
    args = ["--population", "0,200", "--kinds", "single,threaded", "--writes", "2000"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "droidoom", "farm", "run", "-i", str(inv), *args,
         "--rate", "1000", "--backoff", "0.2", "-o", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(srv),
        preexec_fn=default_signals,
    )  # fmt: skip
    try:
        rec = wait_recording(str(workdirs[0]), proc, writes=500)
        peers[0].kill()  # the cable is pulled ~mid-run
    finally:
        stdout, stderr, _ = finish(proc, timeout=120)
    assert "Traceback" not in stderr, stderr
    (farm_dir,) = out.iterdir()
    doc = json.loads((farm_dir / "farm.json").read_text())
    dev = {d["serial"]: d for d in doc["devices"]}
    gone = dev[peers[0].serial]
    n = records_in(rec)
    # Never retried, never deleted: the run is kept and knows what the phone holds.
    assert gone["status"] == "partial" and gone["attempts"] == 1, gone
    assert gone["run_dir"] and (farm_dir / gone["run_dir"] / "run.json").is_file()
    # what reached the host before the cable went (on a loaded machine maybe nothing)
    assert 0 <= gone["writes_on_device"] <= n and gone["writes_recorded"] == 0
    assert "droidoom recover" in gone["error"]
    assert all(dev[p.serial]["status"] == "complete" for p in peers[1:])
    assert rec.exists()

    p = run_cli("report", str(farm_dir / gone["run_dir"]), env=dict(cli_env(srv), COLUMNS="300"))
    assert p.returncode == 2 and "droidoom recover" in p.stderr  # report points the way
    p = run_cli("report", str(farm_dir), env=dict(cli_env(srv), COLUMNS="300"))
    assert p.returncode == 0 and "droidoom recover" in p.stderr  # partial: missing points

    back = adb_peer_factory(server=srv, port=peers[0].port)  # the phone comes back
    p = run_cli("recover", "--serial", back.serial, "-o", str(farm_dir), env=cli_env(srv))
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"recovered {n} writes" in p.stdout
    run = farm_dir / gone["run_dir"]
    assert len(droidoom.load(run)) == n
    doc = json.loads((farm_dir / "farm.json").read_text())
    again = {d["serial"]: d for d in doc["devices"]}[peers[0].serial]
    assert again["writes_recorded"] == n and again["recovered"]
    assert not wait_no_helpers()


def test_two_runs_on_one_phone_the_second_is_refused(adb_peer, device_dir, tmp_path):
    env = cli_env(adb_peer.server, device_dir)
    for attempt in range(3):  # the first run must outlive the second's start-up
        first = tmp_path / f"first{attempt}"
        proc = start_profile(adb_peer.serial, env, first, longer=3**attempt)
        try:
            wait_recording(device_dir, proc)
            p = run_cli("profile", "--serial", adb_peer.serial, "--quick",
                        "-o", str(tmp_path / "second"), env=env)  # fmt: skip
            overlapped = proc.poll() is None  # else a loaded host: the first had ended
        finally:
            out, err, _ = finish(proc)
        assert proc.returncode == 0, err
        if overlapped:
            break
        shutil.rmtree(tmp_path / "second", ignore_errors=True)
    assert overlapped, "the first run ended before the second started, three times"
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "is busy" in p.stderr and f"pid {proc.pid}" in p.stderr
    assert not (tmp_path / "second").exists() or not any((tmp_path / "second").iterdir())
    (run,) = first.iterdir()
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "complete"
    act = meta["device_activity"]
    assert act["before"]["procs"] > 0 and act["after"]["procs"] > 0
    assert not list(Path(device_dir).glob("droidoom-lock*"))  # released


def test_a_lock_left_by_a_killed_host_is_taken_over(adb_peer, device_dir, tmp_path):
    proc = start_profile(adb_peer.serial, cli_env(adb_peer.server, device_dir), tmp_path / "a")
    try:
        wait_recording(device_dir, proc)
        proc.kill()
    finally:
        finish(proc)
    assert list(Path(device_dir).glob("droidoom-lock*"))  # left behind
    p = run_cli("profile", "--serial", adb_peer.serial, "--population", "0", "--kinds",
                "single", "--writes", "50", "-o", str(tmp_path / "b"),
                env=cli_env(adb_peer.server, device_dir))  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "stale" in p.stderr and "recovered" in p.stderr
    (old,) = (tmp_path / "a").iterdir()
    assert len(droidoom.load(old)) > 0


class _DropsDuringCleanup(AdbTarget):
    """A real AdbTarget whose link drops (the peer dies) once the run's device files
    are being removed, i.e. after the helper exited and the records were pulled."""

    peer = None

    def sh(self, script, **kw):
        if script.startswith("rm -f ") and "records-" in script:
            self.peer.kill()
        return super().sh(script, **kw)


def test_link_drop_during_cleanup_is_a_warning_not_an_error(adb_peer, device_dir, tmp_path):
    t = _DropsDuringCleanup(adb_peer.serial, server=Server("127.0.0.1", adb_peer.server.port),
                            workdirs=(device_dir,))  # fmt: skip
    t.peer = adb_peer
    res = runner.profile(t, ProfileSpec(populations=(0,), kinds=("single",), writes=200),
                         tmp_path)  # fmt: skip
    assert res.status == "complete" and len(res.samples) == 200
    assert any("cleanup:" in n for n in res.notices)
    meta = json.loads((res.path / "run.json").read_text())
    assert meta["status"] == "complete" and meta["writes_recorded"] == 200

