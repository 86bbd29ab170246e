"""The test suite's own robustness (issue 13.13): it must pass from any checkout, from a
background job, and next to other test sessions on the same machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, SESSION_MARK, cmdline, comm, helper_pids

from droidoom.native import abi_for_machine, binary_path
from droidoom.protocol import PlanPoint, PlanTarget, render_plan


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
def test_shell_uid_peer_runs_from_a_checkout_uid_2000_cannot_read(tmp_path):
    private = tmp_path / "private"  # a fresh clone under a 0700 temp dir
    shutil.copytree(REPO / "tests", private / "tests",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    os.chmod(private, 0o700)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); from adb_env import ShellUidPeer; "
        "p = ShellUidPeer().start(); print('listening', p.port); p.stop()"
    )
    p = subprocess.run([sys.executable, "-c", code, str(private / "tests")],
                       capture_output=True, text=True, timeout=60)  # fmt: skip
    assert p.returncode == 0 and "listening" in p.stdout, p.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root")
@pytest.mark.parametrize("end", ["stop", "kill"])
def test_su_daemon_ends_with_its_peer(end):
    """The root daemon behind a shell-uid peer's `su` leaves with the peer, whether it is
    stopped or unplugged (SIGKILL): the peer's death signal cannot reach it (uid 2000 may
    not signal root), so it watches its parent."""
    import time

    from adb_env import ShellUidPeer
    from conftest import peer_daemon_pids

    peer = ShellUidPeer(grant_su=True).start()
    try:
        sud = [p for p in peer_daemon_pids()
           if peer.workdir.encode() in cmdline(p) and b"_sud.py" in cmdline(p)]
        assert len(sud) == 1, sud
    finally:
        peer.stop() if end == "stop" else peer.kill()
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{sud[0]}") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(f"/proc/{sud[0]}"), "su's root daemon outlived its peer"


def test_leak_guard_counts_only_this_sessions_helpers(tmp_path):
    """An orphaned helper of another session (no SESSION_MARK) is not ours to judge; one
    this session started is, even once orphaned."""
    plan = tmp_path / "plan.txt"
    writes = tuple((0, 900 + (i % 2), 0) for i in range(100000))
    plan.write_text(render_plan([PlanTarget(0, "single", 1)],
                                [PlanPoint(0, 0, 1, "reopen", 50.0, 0, writes)]))  # fmt: skip
    exe = binary_path(abi_for_machine())
    foreign_env = {k: v for k, v in os.environ.items() if k != "DROIDOOM_TEST_SESSION"}
    procs = []
    try:
        for env, name in ((foreign_env, "foreign"), (dict(os.environ), "ours")):
            # sh starts the helper in the background and exits: the helper is orphaned,
            # as a leaked one would be; it stops when our end of its stdin pipe closes.
            p = subprocess.Popen(
                # (an async command's stdin is /dev/null unless given through another fd)
                ["sh", "-c", f'exec 3<&0; "{exe}" run "{plan}" "{tmp_path}/{name}.bin" <&3 3<&- &'],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )  # fmt: skip
            p.wait(10)
            procs.append(p)
        ours = foreign = None
        for pid in _helpers(tmp_path):
            with open(f"/proc/{pid}/environ", "rb") as f:
                marked = SESSION_MARK.encode() in f.read().split(b"\0")
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read()
            if b"ours.bin" in cmd and marked:
                ours = pid
            if b"foreign.bin" in cmd and not marked:
                foreign = pid
        assert ours and foreign
        found = helper_pids()
        assert ours in found and foreign not in found
    finally:
        for p in procs:
            p.stdin.close()  # the helpers' stdin: they stop and take their targets along


def _helpers(tmp_path) -> list[int]:
    """Helpers whose command line names `tmp_path` (this test's), once both run. (The
    `sh -c` that starts one names it too, and its forked child keeps sh's name until it
    execs the helper: only a process already called droidoom-helper counts.)"""
    import time

    deadline = time.monotonic() + 10
    while True:
        pids, names = [], set()
        for d in filter(str.isdigit, os.listdir("/proc")):
            cmd = cmdline(d)
            if str(tmp_path).encode() in cmd and comm(d) == "droidoom-helper":
                pids.append(int(d))
                names |= {n for n in (b"ours", b"foreign") if n + b".bin" in cmd}
        if len(names) == 2 or time.monotonic() > deadline:
            return pids
        time.sleep(0.05)


@pytest.mark.parametrize("busy, fails", [(1, False), (2, True)])
def test_busy_timing_skips_are_counted_and_too_many_fail(tmp_path, busy, fails):
    """Of 4 timing checks, 1 skipped for a busy host is said at the end; 2 fail the run."""
    tests = ["import pytest", "from busy_skips import skip_busy"]
    for i in range(4):
        body = f"skip_busy('load {i}')" if i < busy else "pass"
        tests += ["@pytest.mark.timing", f"def test_{i}():", f"    {body}"]
    (tmp_path / "test_t.py").write_text("\n".join(tests) + "\n")
    p = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "busy_skips",
         "-W", "ignore::pytest.PytestUnknownMarkWarning", str(tmp_path / "test_t.py")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)},
    )  # fmt: skip
    assert f"{busy} timing check(s) of 4 skipped: host busy" in p.stdout, p.stdout
    assert (p.returncode == 1) == fails, p.stdout
