"""The farm on a real multi-host topology: two "lab hosts" (network namespaces, each with
its own adb server listening on its veth address and its own loopback peers), reached
from the root namespace through those addresses only. One peer is killed mid-run: the
farm completes, that device is marked failed, the others are complete, and no process
is left behind.

Both labs have a peer at the same address (127.0.0.1:7100 inside each namespace), as two
labs with TCP-connected phones easily do: the dataset keeps them apart by server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from conftest import run_cli, wait_no_helpers
from netns import LabHost, unavailable
from test_farm import SMALL, toml_inventory

import droidoom
from droidoom import store
from droidoom.protocol import HEADER_SIZE, RECORD_SIZE

_why = unavailable()
pytestmark = pytest.mark.skipif(_why is not None, reason=_why or "")

SAME_PORT = 7100  # a peer in each namespace listens here: same serial on both servers


@pytest.fixture(scope="module")
def labs():
    with LabHost("a") as a, LabHost("b") as b:
        a.add_peer({"ro.product.model": "Pixel 4"}, port=SAME_PORT)
        a.add_peer({"ro.product.model": "Pixel 5"})
        b.add_peer({"ro.product.model": "Pixel 8"}, port=SAME_PORT)
        b.add_peer({"ro.product.model": "Galaxy S23"})
        yield a, b
        # Nothing but the lab's own server and (live) peers may run in a namespace.
        for lab in (a, b):
            ours = {lab.server.proc.pid} | {p.pid for p in lab.peers if p.alive}
            assert lab.pids() <= ours, f"{lab.ns}: stray processes {lab.pids() - ours}"
    for lab in (a, b):
        assert subprocess.run(["ip", "netns", "pids", lab.ns], capture_output=True).returncode
        assert not (lab.server.alive or any(p.alive for p in lab.peers))


def _inventory(labs, tmp_path):
    a, b = labs
    devices = []
    for name, lab in (("lab-a", a), ("lab-b", b)):
        for i, peer in enumerate(lab.peers):  # own workdir each: peers share this host's FS
            workdir = str(tmp_path / f"{name}-{i}")
            devices.append({"serial": peer.serial, "server": name, "workdir": workdir})
    servers = [
        {"address": a.server_address, "name": "lab-a"},
        {"address": b.server_address, "name": "lab-b"},
    ]
    return toml_inventory(tmp_path / "farm.toml", servers, devices, name="two-labs")


def test_inventory_resolves_across_namespaces(labs, tmp_path):
    wide = dict(os.environ, COLUMNS="250")  # rich: no folded cells
    p = run_cli("devices", "--inventory", str(_inventory(labs, tmp_path)), env=wide)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "4 device(s) selected, 4 usable" in p.stdout
    for lab in labs:
        assert f"({lab.server_address}): reachable" in p.stdout
    assert f"127.0.0.1:{SAME_PORT}@lab-a" in p.stdout


def test_farm_survives_a_peer_killed_mid_run(labs, tmp_path):
    a, b = labs
    victim = b.peers[1]
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "droidoom", "farm", "run", "-i", str(_inventory(labs, tmp_path))]
    # Paced writes: each run lasts a few seconds, so the kill lands mid-run.
    cmd += [*SMALL, "--rate", "150", "--backoff", "0.5", "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        records = tmp_path / "lab-b-1"
        deadline = time.monotonic() + 60
        while not list(records.glob("records-*.bin")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert list(records.glob("records-*.bin")), "the victim's helper never started"
        (rec,) = records.glob("records-*.bin")
        while rec.stat().st_size < HEADER_SIZE + 50 * RECORD_SIZE:  # mid-run: writing
            assert proc.poll() is None and time.monotonic() < deadline, "never wrote 50"
            time.sleep(0.05)
        victim.kill()  # SIGKILL: the cable is pulled
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # Nothing required failed and three devices completed: the farm succeeds.
    assert proc.returncode == 0, stdout + stderr
    (farm_dir,) = out.iterdir()
    doc = json.loads((farm_dir / "farm.json").read_text())
    status = {(d["server"], d["serial"]): d for d in doc["devices"]}
    dead = status.pop(("lab-b", victim.serial))
    # The victim reported samples before it vanished: its run is kept (never retried or
    # deleted) and says that `droidoom recover` brings them home once the phone is back.
    assert dead["status"] == "partial" and "droidoom recover" in dead["error"], dead
    assert dead["writes_recorded"] == 0 and dead["run_dir"]  # its records wait on the phone
    assert dead["attempts"] == 1
    assert [d["status"] for d in status.values()] == ["complete"] * 3
    assert doc["status"] == "partial"
    assert {d["server_address"] for d in doc["devices"]} == {a.server_address, b.server_address}
    assert "3/4 devices complete" in stdout and "partial" in stdout

    # One dataset: three devices, the two 127.0.0.1:7100 apart by server.
    df = droidoom.load(farm_dir)
    assert set(df["device"].astype(str)) == {
        f"127.0.0.1:{SAME_PORT}@lab-a",
        f"127.0.0.1:{SAME_PORT}@lab-b",
        a.peers[1].serial,
    }
    runs = store.find_runs(farm_dir)
    assert sorted(r.status for r in runs) == ["complete"] * 3 + ["partial"]
    assert {r.meta["farm"]["server_address"] for r in runs} == {a.server_address, b.server_address}

    # `droidoom report` on the farm directory: devices side by side, with figures.
    figs = tmp_path / "figs"
    wide = dict(os.environ, COLUMNS="250")
    p = run_cli("report", str(farm_dir), "--figures", str(figs), env=wide)
    assert p.returncode == 0, p.stdout + p.stderr
    for device in set(df["device"].astype(str)):
        assert device in p.stdout
    assert any("devices" in f.name for f in figs.glob("*.png")), list(figs.iterdir())

    # No process left behind: the victim and its helper are gone, the rest idle.
    assert not victim.alive
    assert not wait_no_helpers()
