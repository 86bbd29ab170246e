"""`--scenario replay:TRACE` on a farm (`farm run`, `profile --all`): each device's replay
is sized from the trace and plays its sequence, as `profile --scenario replay:TRACE` does.
Real adb server, loopback adbd peers (tests/test_farm.py's topology)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli
from test_farm import toml_inventory

import droidoom
from droidoom.targets.adb import AdbTarget
from droidoom.targets.select import AdbServer
from droidoom.traces import replay
from droidoom.traces.synth import SynthSpec, generate


@pytest.fixture
def trace(tmp_path) -> Path:
    data, _ = generate(SynthSpec(seed=7, duration_s=120))  # ~130 updates of ~24 processes
    path = tmp_path / "phone.pftrace"
    path.write_bytes(data)
    return path


def _check_replays(farm_dir: Path, trace: Path, serials: set[str]) -> None:
    """Every device replayed the trace at its population, one threaded target per traced
    process, each point writing the trace's values in the trace's order."""
    rt = replay.load(trace)
    df = droidoom.load(farm_dir)
    assert set(df["device"].astype(str)) == serials
    assert set(df["population"]) == {rt.population()} and rt.population() > 100
    assert set(df["kind"].astype(str)) == {"threaded"}
    want_adj = rt.events["adj"].to_numpy()
    for _, g in df.groupby(["device", "point"], observed=True):
        g = g.sort_values("seq")
        assert (g["adj_to"].to_numpy() == want_adj).all()
    for run in (d for d in farm_dir.iterdir() if (d / "run.json").is_file()):
        meta = json.loads((run / "run.json").read_text())
        assert meta["replay"]["sha256"] == rt.sha256
        assert meta["spec"]["populations"] == [rt.population()]
        assert len([t for t in meta["targets"] if t["status"] == "ok"]) == len(rt.pids)


def test_farm_run_sizes_a_replay_from_its_trace(adb_server, adb_peer_factory, trace, tmp_path):
    peers = [adb_peer_factory({"ro.product.model": m}) for m in ("Pixel 4", "Pixel 8")]
    devices = [{"serial": p.serial, "workdir": str(tmp_path / f"dev{i}")}
               for i, p in enumerate(peers)]  # fmt: skip
    f = toml_inventory(tmp_path / "farm.toml", [f"127.0.0.1:{adb_server.port}"], devices,
                       profile={"compress": 0})  # fmt: skip
    out = tmp_path / "runs"
    p = run_cli("farm", "run", "-i", str(f), "--scenario", f"replay:{trace}", "-o", str(out))
    assert p.returncode == 0, p.stdout + p.stderr
    (farm_dir,) = out.iterdir()
    _check_replays(farm_dir, trace, {p.serial for p in peers})


def test_a_device_override_to_a_replay_is_sized_from_its_trace(trace):
    """One device of a farm switched to `replay:TRACE` in the inventory: its spec is sized
    from the trace like a farm-wide replay (population, threaded targets), unless the
    override gives them; the other devices keep the farm's spec."""
    from droidoom.farm.fleet import device_spec
    from droidoom.farm.inventory import FarmDevice, Seen
    from droidoom.farm.inventory_file import ServerEntry
    from droidoom.spec import ProfileSpec

    base = ProfileSpec(populations=(0, 400, 800), writes=400)
    seen = Seen(ServerEntry(AdbServer("127.0.0.1", 5037), "lab"), "emulator-5554", "device")
    pop = replay.load(trace).population()
    dev = FarmDevice(seen, "a", profile={"scenario": f"replay:{trace}"})
    spec = device_spec(base, dev)
    assert spec.populations == (pop,) and spec.kinds == ("threaded",), spec
    given = FarmDevice(seen, "b", profile={"scenario": f"replay:{trace}", "populations": (0,)})
    assert device_spec(base, given).populations == (0,)
    assert device_spec(base, FarmDevice(seen, "c")) == base


def test_profile_all_sizes_a_replay_from_its_trace(adb_server, adb_peer_factory, trace,
                                                   tmp_path):  # fmt: skip
    peers = [adb_peer_factory({"ro.product.model": m}) for m in ("Pixel 4", "Pixel 8")]
    # one push of the helper first: the peers share this host's /data/local/tmp
    AdbTarget(peers[0].serial, server=AdbServer("127.0.0.1", adb_server.port)).install_helper()
    out = tmp_path / "runs"
    p = run_cli("profile", "--all", "--adb-host", "127.0.0.1", "--adb-port",
                str(adb_server.port), "--scenario", f"replay:{trace}", "--compress", "0",
                "-o", str(out))  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    (farm_dir,) = out.iterdir()
    _check_replays(farm_dir, trace, {p.serial for p in peers})
