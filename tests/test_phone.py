"""Issue 9 "Real Pixels": what breaks or misleads on a phone, through a real adb server and
the loopback adbd peer made realistic (simpleperf stand-in with the real option table,
shell uid with a phone's groups and oom_score_adj values, SELinux-denied reads, su)."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from adb_env import cli_env
from conftest import run_cli
from test_adb_target import PIXEL, only_run, target

from droidoom import runner
from droidoom.capture.perf import PerfSource
from droidoom.spec import ProfileSpec

needs_perf = pytest.mark.skipif(
    shutil.which("perf") is None or os.geteuid() != 0, reason="needs perf and root"
)
ANDROID14 = {**PIXEL, "ro.build.version.sdk": "34", "ro.build.version.release": "14"}


# --- item 1: --capture perf on Android ---------------------------------------------------


@needs_perf
def test_profile_quick_with_simpleperf_records_every_planned_write(adb_peer_factory, device_dir,
                                                                   tmp_path):  # fmt: skip
    peer = adb_peer_factory(ANDROID14)
    env = cli_env(peer.server, device_dir)
    p = run_cli("profile", "--serial", peer.serial, "--quick", "--capture", "clock,perf",
                "--out", str(tmp_path), env=env)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    meta = json.loads((only_run(tmp_path) / "run.json").read_text())
    assert meta["status"] == "complete", meta.get("reason")
    assert meta["writes_recorded"] == meta["writes_planned"] > 0
    perf = meta["captures"]["perf"]
    assert perf["tool"].endswith("simpleperf") and perf["samples"]["samples"] > 0
    assert (only_run(tmp_path) / "perf_symbols.parquet").is_file()


class OldWrap(PerfSource):
    """The command line droidoom used to pass (`--clock` is not a simpleperf option)."""

    def wrap(self, command):
        return super().wrap(command).replace(" record ", " record --clock monotonic ", 1)


@needs_perf
def test_a_failing_simpleperf_says_so_not_disconnected(adb_peer_factory, device_dir, tmp_path):
    peer = adb_peer_factory(ANDROID14)
    t = target(peer, device_dir)
    spec = ProfileSpec(populations=(0,), writes=50, kinds=("single",), warmup=1)
    res = runner.profile(t, spec, tmp_path, captures=[OldWrap()])
    reason = res.meta["reason"]
    assert res.status == "partial" and "disconnected" not in reason
    assert "simpleperf failed (exit 1)" in reason
    assert "Unknown option for record command: --clock" in reason


def test_simpleperf_options_follow_its_help_table(adb_peer_factory, device_dir):
    """--no-inherit and --use-cmd-exit-code when `help record` lists them; never --clock."""
    peer = adb_peer_factory(ANDROID14)
    t = target(peer, device_dir)
    src = PerfSource()
    src._run_probe(t, False)
    src.android, src.tool = True, "simpleperf"
    from droidoom.capture.base import CaptureContext

    src._ctx = CaptureContext("r1", device_dir, "x86_64", False)
    cmd = src.wrap("exec true")
    assert "--no-inherit" in cmd and "--use-cmd-exit-code" in cmd and "--clock" not in cmd
    # a helper exit code passes through simpleperf
    res = t.sh(src.wrap("exit 7"))
    assert res.exit_code == 7, res.stderr
