"""Shared fixtures. Everything here drives real parts: this host's kernel, the real helper.

- `local_run` / `local_run_df`: one real `droidoom profile --local --quick` per session.
- `slow_run`: the same profile while 1600 extra processes exist on the host, so
  multiprocess writes (which walk every process) are really slower: a genuine
  regression for `compare`, not edited numbers.
- an autouse guard: no droidoom-helper process may outlive a test.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import droidoom
from droidoom.helpers import abi_for_machine, binary_path
from droidoom.protocol import PlanPoint, PlanTarget, render_plan

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["adb_fixtures"] if (Path(__file__).parent / "adb_fixtures.py").exists() else []


def _stat(pid: str) -> tuple[str, int] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except OSError:
        return None
    comm = data[data.index("(") + 1 : data.rindex(")")]
    return comm, int(data[data.rindex(")") + 2 :].split()[1])


#: Every process this session starts inherits this mark (the CLI, adb peers, and through
#: them each helper): the leak guard judges only helpers that carry it, never another
#: session's on the same machine.
SESSION_MARK = f"DROIDOOM_TEST_SESSION={os.getpid()}-{time.time_ns()}"
os.environ["DROIDOOM_TEST_SESSION"] = SESSION_MARK.split("=", 1)[1]
# Device locks of `--local` runs live in a per-session directory, so concurrent test
# sessions on one machine do not refuse each other's runs (devlock.LOCK_DIR_ENV).
os.environ.setdefault("DROIDOOM_LOCK_DIR", tempfile.mkdtemp(prefix="droidoom-locks-"))


def _ours(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            return SESSION_MARK.encode() in f.read().split(b"\0")
    except OSError:
        return False


def helper_pids() -> set[int]:
    """Pids of droidoom-helper processes this test session started (they carry
    SESSION_MARK in their environment), alive or orphaned. Helpers of other sessions on
    the same machine are not ours to judge."""
    pids = set()
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(d)) and st[0] == "droidoom-helper" and _ours(int(d)):
            pids.add(int(d))
    return pids


def default_signals() -> None:
    """preexec_fn for a spawned CLI a test will signal: SIGINT/SIGTERM/SIGHUP back to
    their defaults (a suite started from a background job or nohup ignores them, and
    children inherit that)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)


def wait_no_helpers(before: set[int] = frozenset(), timeout: float = 5.0) -> set[int]:
    """Wait until no new helper process remains; return the ones left (empty = good)."""
    deadline = time.monotonic() + timeout
    while True:
        left = helper_pids() - set(before)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.fixture(autouse=True)
def no_helper_left_behind():
    before = helper_pids()
    yield
    left = wait_no_helpers(before)
    assert not left, f"helper processes outlived the test: {sorted(left)[:10]}"


def run_cli(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run the real `droidoom` console script."""
    return subprocess.run(
        [sys.executable, "-m", "droidoom", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kw,
    )


def interrupt_cli(out: Path, *args: str, after: float = 2.5):
    """Start `droidoom profile --out OUT ARGS`, send SIGINT `after` s into the run (once
    its run directory exists), return (returncode, stderr, run_dir)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "droidoom", "profile", "--out", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    try:
        deadline = time.monotonic() + 60
        while not list(out.glob("*/run.json")) and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(after)
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (run,) = [d for d in out.iterdir() if d.is_dir()]
    return proc.returncode, err, run


class BackgroundPopulation:
    """N sleeping processes owned by a second helper: makes every process walk longer.

    Uses the helper itself (one point, a paced plan that outlasts the test), so the
    processes die with it when we close its stdin.
    """

    def __init__(self, n: int, tmp: Path):
        plan = tmp / "bg-plan.txt"
        writes = tuple((0, 900 + (i % 2), 0) for i in range(100000))
        plan.write_text(
            render_plan(
                [PlanTarget(0, "single", 1)], [PlanPoint(0, n, 1, "reopen", 1.0, 0, writes)]
            )
        )
        exe = binary_path(abi_for_machine())
        self.proc = subprocess.Popen(
            [str(exe), "run", str(plan), str(tmp / "bg-records.bin")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for line in self.proc.stdout:
            if line.startswith("point "):  # population is up once the point line is out
                break
            if line.startswith("error"):
                raise RuntimeError(line)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc.stdout.close()


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("runs")


@pytest.fixture(scope="session")
def local_run(runs_dir) -> Path:
    """A real quick profile of this host, through the CLI."""
    out = runs_dir / "local"
    p = run_cli("profile", "--local", "--quick", "--out", str(out))
    assert p.returncode == 0, p.stderr + p.stdout
    (run,) = [d for d in out.iterdir() if d.is_dir()]
    return run


@pytest.fixture(scope="session")
def local_run_df(local_run):
    return droidoom.load(local_run)


@pytest.fixture(scope="session")
def slow_run(runs_dir, tmp_path_factory) -> Path:
    """Same spec as `local_run`, profiled while 1600 extra processes exist."""
    out = runs_dir / "slow"
    bg = BackgroundPopulation(1600, tmp_path_factory.mktemp("bg"))
    try:
        p = run_cli("profile", "--local", "--quick", "--out", str(out))
    finally:
        bg.close()
    assert p.returncode == 0, p.stderr + p.stdout
    (run,) = [d for d in out.iterdir() if d.is_dir()]
    return run
