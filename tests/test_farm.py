"""Farm on one real adb server with several loopback adbd peers (the multi-namespace
topology is in test_farm_netns.py): inventory, selection, runs, dataset, Ctrl-C, retries.

Peers serve this host's filesystem, so each gets its own on-device workdir through the
inventory's per-device overrides (real phones each have their own /data/local/tmp).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import REPO, default_signals, run_cli
from rich.console import Console

import droidoom
from droidoom import store
from droidoom.errors import PermanentTargetError, TransientTargetError, UsageError
from droidoom.farm import fleet as farm
from droidoom.farm import inventory
from droidoom.report import terminal as report
from droidoom.spec import QUICK, ProfileSpec
from droidoom.targets.select import AdbServer

SMALL = ["--population", "0,200,400", "--writes", "100", "--kinds", "single,multiprocess"]
MODELS = ("Pixel 4", "Pixel 8", "Galaxy S23")


def toml_inventory(path: Path, servers: list[str], devices: list[dict], **top) -> Path:
    """Write a farm.toml (tiny TOML writer: strings, bools, numbers, flat tables)."""

    def val(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(k)} = {val(x)}" for k, x in v.items()) + " }"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(val(x) for x in v) + "]"
        return str(v)

    lines = [f"{k} = {val(v)}" for k, v in top.items()]
    lines.append(f"servers = {val(servers)}")
    for d in devices:
        lines += ["", "[[devices]]"] + [f"{k} = {val(v)}" for k, v in d.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def lab(adb_server, adb_peer_factory, tmp_path):
    """Three peers (different models) on the session adb server, with their workdirs."""
    peers = [
        adb_peer_factory({"ro.product.model": m, "ro.build.type": t})
        for m, t in zip(MODELS, ("userdebug", "user", "userdebug"), strict=True)
    ]
    workdirs = {p.serial: str(tmp_path / f"dev{i}") for i, p in enumerate(peers)}
    return adb_server, peers, workdirs


def per_device(workdirs: dict[str, str]) -> list[dict]:
    return [{"serial": s, "workdir": w} for s, w in workdirs.items()]


# --------------------------------------------------------------------------- inventory file


def test_example_inventory_parses():
    inv = inventory.load_inventory(REPO / "droidoom" / "farm_example.toml")
    assert [s.name for s in inv.servers] == ["10.0.0.11:5037", "rack2"]
    assert inv.servers[1].server == AdbServer("10.0.0.12", 5037)
    assert (inv.concurrency, inv.retries, inv.backoff) == (8, 2, 1.0)
    assert inv.profile["populations"] == (0, 400, 800, 1600)
    req = inv.selectors[2]
    assert req.required and req.name == "s23-kernel-ci" and req.profile["rate"] == 2000.0
    assert inv.selectors[3].exclude


@pytest.mark.parametrize(
    "text, expect",
    [
        ("", "list the adb servers"),
        ('servers = ["h:99999"]', "bad port"),
        ('servers = ["a:1"]\ncolour = 1', "unknown key 'colour'"),
        ('servers = ["a:1"]\n[[devices]]\nserail = "x"', "unknown key 'serail'"),
        ('servers = ["a:1"]\n[[devices]]\nserver = "nope"', "server 'nope' is not in"),
        ('servers = ["a:1"]\n[profile]\nwrites = 0', "--writes must be"),
        ('servers = ["a:1"]\n[profile]\nwrite = 10', "unknown profile setting 'write'"),
        ('servers = ["a:1"]\n[[devices]]\nexclude = true\nrequired = true', "takes only filters"),
        ('servers = ["a:1"]\n[[devices]]\nworkdir = "tmp"', "absolute path"),
        ('servers = ["a:1", "a:1"]', "listed twice"),
        ('servers = ["a:1"]\nretries = -1', "non-negative"),
        ("servers = [", "not valid TOML"),
    ],
)
def test_inventory_errors_say_what_to_fix(tmp_path, text, expect):
    f = tmp_path / "farm.toml"
    f.write_text(text)
    with pytest.raises(UsageError, match=expect) as e:
        inventory.load_inventory(f)
    assert str(f) in str(e.value)


# --------------------------------------------------------------------------- resolving


def test_selectors_overrides_and_required(lab, tmp_path):
    server, peers, workdirs = lab
    addr = f"127.0.0.1:{server.port}"
    f = toml_inventory(
        tmp_path / "farm.toml",
        [addr],
        [
            {"model": "Pixel*"},  # Pixel 4 and Pixel 8
            {"props": {"ro.build.type": "userdebug"}, "profile": {"writes": 50}},  # 4 and S23
            {"model": "Galaxy*", "exclude": True},  # ...but not the S23
            {"serial": peers[0].serial, "name": "p4", "required": True, "workdir": "/w0"},
            {"serial": peers[0].serial, "profile": {"writes": 70}},  # later entry wins
        ],
    )
    res = inventory.resolve(inventory.load_inventory(f))
    assert [s.reachable for s in res.servers] == [True]
    assert {d.serial for d in res.seen} >= {p.serial for p in peers}
    got = {d.serial: d for d in res.devices}
    assert set(got) == {peers[0].serial, peers[1].serial}
    p4, p8 = got[peers[0].serial], got[peers[1].serial]
    assert (p4.label, p4.required, p4.workdir, dict(p4.profile)) == (
        "p4",
        True,
        "/w0",
        {"writes": 70},
    )
    assert (p8.label, p8.required, dict(p8.profile)) == (peers[1].serial, False, {})
    assert p4.seen.model == "Pixel 4" and not res.missing

    # a required device that is not there: `farm run` refuses before creating anything
    f2 = toml_inventory(tmp_path / "f2.toml", [addr], [{"serial": "R5C*", "required": True}])
    res2 = inventory.resolve(inventory.load_inventory(f2))
    assert res2.missing and "no device matches" in res2.missing[0]
    with pytest.raises(PermanentTargetError, match="required devices are not available"):
        farm.run_farm(res2, QUICK, tmp_path / "out")
    assert not (tmp_path / "out").exists()

    p = run_cli("devices", "--inventory", str(f2))  # also `droidoom farm devices`
    assert p.returncode == 1 and "missing" in p.stdout and "R5C*" in p.stdout, p.stdout + p.stderr


def test_unreachable_server_is_reported_not_started(tmp_path):
    from adb_env import free_port

    port = free_port()
    f = toml_inventory(tmp_path / "farm.toml", [f"127.0.0.1:{port}"], [])
    res = inventory.resolve(inventory.load_inventory(f))
    assert not res.servers[0].reachable and "no adb server listens" in res.servers[0].error
    assert not AdbServer("127.0.0.1", port).listening()  # nothing was started in its place
    p = run_cli("farm", "run", "-i", str(f), "--quick", "-o", str(tmp_path / "o"))
    assert p.returncode == 2 and "selects no device" in p.stderr, p.stderr


# --------------------------------------------------------------------------- farm runs


def test_farm_run_one_dataset(lab, tmp_path):
    server, peers, workdirs = lab
    devices = per_device(workdirs) + [{"serial": peers[2].serial, "profile": {"writes": 60}}]
    f = toml_inventory(
        tmp_path / "farm.toml", [f"127.0.0.1:{server.port}"], devices, name="bench-lab"
    )
    p = run_cli("devices", "--inventory", str(f))
    assert p.returncode == 0 and "3 device(s) selected, 3 usable" in p.stdout, p.stdout + p.stderr

    out = tmp_path / "runs"
    p = run_cli("farm", "run", "--inventory", str(f), *SMALL, "--jobs", "3", "-o", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    (farm_dir,) = out.iterdir()
    doc = json.loads((farm_dir / "farm.json").read_text())
    assert doc["status"] == "complete" and doc["farm_id"] == farm_dir.name
    assert doc["inventory"]["name"] == "bench-lab"
    assert [d["status"] for d in doc["devices"]] == ["complete"] * 3
    for d in doc["devices"]:
        assert d["verdict"] in ("fixed", "regressed", "inconclusive") and d["medians_ns"]
        assert (farm_dir / d["run_dir"] / "samples.parquet").is_file()
    assert "3/3 devices complete" in p.stdout

    runs = store.find_runs(farm_dir)
    assert {r.meta["farm_id"] for r in runs} == {farm_dir.name}
    assert {r.meta["inventory_name"] for r in runs} == {"bench-lab"}
    df = droidoom.load(farm_dir)
    per_dev = df.groupby("device", observed=True).size()
    assert set(per_dev.index) == {p.serial for p in peers}
    assert per_dev[peers[2].serial] == 3 * 2 * 60  # per-device override: 60 writes
    assert per_dev[peers[0].serial] == 3 * 2 * 100

    console = Console(record=True, width=200)
    report.render_terminal(df, [r.meta for r in runs], console)
    text = console.export_text()
    for peer in peers:
        assert f"write latency (µs) - {peer.serial}" in text


def test_profile_all_devices_on_one_server(adb_server, adb_peer_factory, tmp_path):
    from droidoom.targets.adb import AdbTarget

    peers = [adb_peer_factory({"ro.product.model": m}) for m in MODELS[:2]]
    # The peers share this host's /data/local/tmp: install the helper once beforehand, as
    # two first-time pushes of the same path racing is a loopback artifact.
    AdbTarget(peers[0].serial, server=AdbServer("127.0.0.1", adb_server.port)).install_helper()
    out = tmp_path / "runs"
    args = ["--adb-host", "127.0.0.1", "--adb-port", str(adb_server.port), *SMALL]
    p = run_cli("profile", "--all", *args, "--writes", "30", "-o", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    (farm_dir,) = out.iterdir()
    df = droidoom.load(farm_dir)
    assert {p.serial for p in peers} <= set(df["device"].astype(str))


def test_ctrl_c_stops_every_device(lab, tmp_path):
    server, peers, workdirs = lab
    f = toml_inventory(tmp_path / "farm.toml", [f"127.0.0.1:{server.port}"], per_device(workdirs))
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "droidoom", "farm", "run", "-i", str(f), *SMALL]
    proc = subprocess.Popen(
        [*cmd, "--writes", "400", "--rate", "200", "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    try:
        deadline = time.monotonic() + 60
        while len(list(out.glob("*/*/run.json"))) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # helpers are writing (paced) by now
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, stdout + stderr
    (farm_dir,) = out.iterdir()
    doc = json.loads((farm_dir / "farm.json").read_text())
    assert doc["status"] == "interrupted"
    assert {d["status"] for d in doc["devices"]} <= {"partial", "cancelled"}
    runs = store.find_runs(farm_dir)
    assert runs and all(r.status == "partial" for r in runs)
    assert "cancelled" in {r.meta["reason"] for r in runs}
    assert len(droidoom.load(farm_dir)) > 0  # what was measured before Ctrl-C is kept


# --------------------------------------------------------------------------- retries


class _FlakyFirstAttempt(farm.FarmTarget):
    """A real FarmTarget whose first connection fails as a dropped device would."""

    calls: dict[str, int] = {}
    error = TransientTargetError

    def facts(self):
        n = self.calls[self.name] = self.calls.get(self.name, 0) + 1
        if n == 1:
            raise self.error(f"{self.name}: connection lost (injected)")
        return super().facts()


def test_transient_errors_are_retried_permanent_ones_are_not(lab, tmp_path):
    server, peers, workdirs = lab
    addr = f"127.0.0.1:{server.port}"
    f = toml_inventory(tmp_path / "farm.toml", [addr], per_device(workdirs)[:2])
    res = inventory.resolve(inventory.load_inventory(f))
    spec = ProfileSpec(populations=(0, 200), writes=50, kinds=("single",))

    class Permanent(_FlakyFirstAttempt):
        calls: dict[str, int] = {}
        error = PermanentTargetError

    def factory(dev):
        return (_FlakyFirstAttempt if dev.serial == peers[0].serial else Permanent)(dev)

    statuses = []

    class Watch(farm.FarmObserver):
        def status(self, dev, text):
            statuses.append((dev.serial, text))

    result = farm.run_farm(
        res, spec, tmp_path / "out", backoff=0.1, target_factory=factory, observer=Watch()
    )
    by_serial = {o.device.serial: o for o in result.outcomes}
    flaky, perm = by_serial[peers[0].serial], by_serial[peers[1].serial]
    assert (flaky.status, flaky.attempts, len(flaky.errors)) == ("complete", 2, 1)
    assert "injected" in flaky.errors[0]
    assert any(t.startswith("retry in") for s, t in statuses if s == peers[0].serial)
    assert (perm.status, perm.attempts) == ("failed", 1)
    assert result.status == "partial" and result.ok  # no device was required
    # only the completed run is in the dataset; the failed one is in farm.json only
    assert [r.device for r in store.find_runs(result.path)] == [peers[0].serial]
    doc = json.loads((result.path / "farm.json").read_text())
    (failed,) = [d for d in doc["devices"] if d["serial"] == peers[1].serial]
    assert failed["status"] == "failed" and failed["error"].startswith("attempt 1:")


def test_cancel_event_stops_a_library_farm(lab, tmp_path):
    server, peers, workdirs = lab
    f = toml_inventory(tmp_path / "farm.toml", [f"127.0.0.1:{server.port}"], per_device(workdirs))
    res = inventory.resolve(inventory.load_inventory(f))
    spec = ProfileSpec(populations=(0, 200), writes=2000, kinds=("single",), rate=200)
    cancel = threading.Event()
    threading.Timer(4.0, cancel.set).start()
    result = farm.run_farm(res, spec, tmp_path / "out", cancel=cancel)
    assert result.status == "interrupted"
    assert {o.status for o in result.outcomes} <= {"partial", "cancelled"}
