"""Replay of a trace the peer's perfetto stand-in recorded (real Perfetto protobuf written
by tests/peer_tools/_traced.py from this host's oom_score_adj_update tracepoint)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from adb_env import SHELL_UID, ShellUidPeer, cli_env, make_device_dir
from conftest import run_cli

import droidoom
from droidoom.traces import replay

pytest_plugins = ["perfetto_env"]

PHONE = {
    "ro.product.model": "Pixel 7", "ro.product.device": "panther",
    "ro.build.version.sdk": "34", "ro.build.version.release": "14",
    "ro.build.type": "user", "ro.debuggable": "0", "init.svc.traced": "running",
}  # fmt: skip


def test_replay_of_a_standin_recorded_trace(traced, adb_peer_factory, tmp_path):
    if not shutil.which("setpriv"):
        pytest.skip("needs setpriv")
    shell_dir = make_device_dir(uid=SHELL_UID)
    try:
        peer = adb_peer_factory(PHONE, peer_class=ShellUidPeer)
        p = run_cli("profile", "--serial", peer.serial, "--quick", "--kinds", "threaded",
                    "--capture", "clock,perfetto", "--out", str(tmp_path / "phone"),
                    env=cli_env(peer.server, shell_dir))  # fmt: skip
        assert p.returncode == 0, p.stdout + p.stderr
    finally:
        shutil.rmtree(shell_dir, ignore_errors=True)
    (recorded,) = [d for d in (tmp_path / "phone").iterdir() if d.is_dir()]
    trace = recorded / "trace.pftrace"
    rt = replay.load(trace)
    # no lmkd on this "phone": every writer's updates are replayed, and said so
    assert rt.writer == "any" and any("does not name lmkd" in n for n in rt.notes())
    helper_target = next(t for t in json.loads((recorded / "run.json").read_text())["targets"])
    assert int(helper_target["pid"]) in rt.pids  # the profiled app process, the busiest
    p = run_cli("profile", "--local", "--scenario", f"replay:{trace}", "--compress", "0",
                "--population", "0", "--out", str(tmp_path / "replay"))  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    s = droidoom.load(tmp_path / "replay").sort_values("seq")
    ev = rt.events
    assert len(s) == len(ev) and (s["err"] == 0).all()
    assert (s["seq"].to_numpy() == np.arange(len(ev))).all()
    # adj >= this host's adj_min (root: -1000): nothing clamped, the sequence is the trace's
    assert s["adj_to"].tolist() == ev["adj"].tolist()
    mine = s.reset_index(drop=True)
    for pid, want in ev.groupby("pid")["adj"]:
        rows = mine[(ev["pid"] == pid).to_numpy()]
        assert rows["adj_from"].tolist()[1:] == want.tolist()[:-1]
