"""Issue 9 items 5 and 11: root through `su` on a production phone (AOSP `su 0 sh -c`,
Magisk `su -c`), asked for once; `clean` removes only what droidoom's manifest lists.
Through a real adb server and the loopback adbd peer (shell uid + su stand-in)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from adb_env import SHELL_UID, ShellUidPeer, cli_env, make_device_dir
from conftest import run_cli
from test_adb_target import only_run, server_of
from test_phone import ANDROID14

from droidoom.capture import build_sources
from droidoom.run import runner
from droidoom.spec import ProfileSpec
from droidoom.targets.adb import AdbTarget

# --- item 5: root probed once; clean removes only what droidoom's manifest lists -------------


def test_clean_spares_other_tools_files_with_our_names(adb_peer_factory, device_dir, tmp_path):
    """/data/local/tmp is shared: another tool's perf-*.data or plan-*.txt is not ours."""
    peer = adb_peer_factory(ANDROID14)
    env = cli_env(peer.server, device_dir)
    p = run_cli("profile", "--serial", peer.serial, "--population", "0,10", "--writes", "20",
                "--out", str(tmp_path), env=env)  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    theirs = ["perf-1234.data", "plan-sweep.txt", "records-x.bin", "ftrace-a.txt"]
    for name in theirs:
        (Path(device_dir) / name).write_text("not droidoom's")
    run_id = only_run(tmp_path).name
    (Path(device_dir) / f"records-{run_id}.bin").write_text("left by a cut-short run")
    p = run_cli("clean", "--serial", peer.serial, env=env)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(device_dir)) == sorted(theirs)
    assert f"records-{run_id}.bin" in p.stdout and "droidoom-helper" in p.stdout


@pytest.mark.parametrize("flavour", ["aosp", "magisk"])
def test_facts_ask_su_for_root_once(shell_peer_env, flavour):
    """Magisk prompts (or toasts) per request: facts() asks once, in the flavour's syntax."""
    peer, log = shell_peer_env(flavour)
    t = AdbTarget(peer.serial, server=server_of(peer), workdirs=("/data/local/tmp",))
    e = t.phone()
    assert e.su is None and e.su_denied
    asked = [" ".join(json.loads(a)) for a in Path(log).read_text().splitlines()]
    assert asked == (["0 id -u"] if flavour == "aosp" else ["-c id -u"])


@pytest.fixture
def shell_peer_env(adb_peer_factory, request, monkeypatch):
    def make(flavour: str):
        if not shutil.which("setpriv") or os.geteuid() != 0:
            pytest.skip("needs setpriv and root")
        d = make_device_dir(uid=SHELL_UID)  # somewhere uid 2000 may write
        request.addfinalizer(lambda: shutil.rmtree(d, ignore_errors=True))
        log = Path(d) / "su.log"
        log.write_text("")
        os.chmod(log, 0o666)
        monkeypatch.setenv("DROIDOOM_PEER_SU", flavour)  # the peer's commands inherit it
        monkeypatch.setenv("DROIDOOM_PEER_SU_LOG", str(log))
        return adb_peer_factory(ANDROID14, peer_class=ShellUidPeer), log

    return make


#: A rooted phone behind su: the shell-uid peer (setpriv, run as root) and tracefs instances.
needs_root_su = pytest.mark.skipif(
    not shutil.which("setpriv") or os.geteuid() != 0
    or not Path("/sys/kernel/tracing/instances").is_dir(),
    reason="needs setpriv, root and tracefs instances",
)


@needs_root_su
@pytest.mark.parametrize("flavour", ["aosp", "magisk"])
def test_profile_through_su_with_ftrace(adb_peer_factory, monkeypatch, flavour, tmp_path):
    """A rooted production phone: adb shell is uid 2000 and root comes from `su` (AOSP
    `su 0 sh -c`, Magisk `su -c`). Root-only ftrace runs through it, asked for once."""
    d = make_device_dir(uid=SHELL_UID)
    try:
        log = Path(d) / "su.log"
        log.write_text("")
        os.chmod(log, 0o666)
        monkeypatch.setenv("DROIDOOM_PEER_SU", flavour)
        monkeypatch.setenv("DROIDOOM_PEER_SU_LOG", str(log))
        peer = adb_peer_factory(ANDROID14, peer_class=ShellUidPeer, grant_su=True)
        t = AdbTarget(peer.serial, server=server_of(peer), workdirs=(d,))
        assert t.facts().root and t.phone().su == flavour
        assert t.sh("id -u", root=True).stdout.strip() == "0"
        spec = ProfileSpec(populations=(0, 10), writes=40, warmup=2)
        res = runner.profile(t, spec, tmp_path, captures=build_sources(["ftrace"]))
        assert res.status == "complete", res.meta.get("reason")
        assert res.meta["captures"]["ftrace"]["matched_fraction"] > 0.9
        # (root-only tracefs instances worked: the helper and ftrace ran through su)
        asked = [" ".join(json.loads(a)) for a in log.read_text().splitlines()]
        syntax = "0 sh -c " if flavour == "aosp" else "-c "
        assert asked[0] == ("0 id -u" if flavour == "aosp" else "-c id -u")
        assert all(a.startswith(syntax) for a in asked[1:]) and len(asked) > 2, asked
    finally:
        shutil.rmtree(d, ignore_errors=True)


@needs_root_su
def test_cancel_through_su_leaves_no_root_helper(adb_peer_factory, monkeypatch, tmp_path):
    """adbd HUPs only its direct child (su); the root helper behind it must still stop and
    take its population with it (the autouse fixture checks no helper is left)."""
    d = make_device_dir(uid=SHELL_UID)
    try:
        monkeypatch.setenv("DROIDOOM_PEER_SU", "magisk")
        peer = adb_peer_factory(ANDROID14, peer_class=ShellUidPeer, grant_su=True)
        t = AdbTarget(peer.serial, server=server_of(peer), workdirs=(d,))
        spec = ProfileSpec(populations=(0, 50), writes=4000, rate=1000, warmup=2)
        cancel = threading.Event()
        threading.Timer(3.0, cancel.set).start()
        res = runner.profile(t, spec, tmp_path, captures=build_sources(["ftrace"]),
                             cancel=cancel)  # fmt: skip
        assert res.status == "partial" and res.meta["reason"] == "cancelled"
        assert 0 < len(res.samples) < res.meta["writes_planned"]
    finally:
        shutil.rmtree(d, ignore_errors=True)
