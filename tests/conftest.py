"""Shared fixtures. Everything here drives real parts: this host's kernel, the real helper.

- `local_run` / `local_run_df`: one real `droidoom profile --local --quick` per session.
- `slow_run`: the same profile while 1600 extra processes exist on the host, so
  multiprocess writes (which walk every process) are really slower: a genuine
  regression for `compare`, not edited numbers.
- an autouse guard: no droidoom-helper process may outlive a test module, and no adbd peer or
  stand-in daemon the session; timing checks skipped on a busy host are counted (busy_skips).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from busy_skips import skip_busy  # noqa: F401  (tests import it from here)

import droidoom
import droidoom.analysis
from droidoom.native import abi_for_machine, binary_path
from droidoom.protocol import PlanPoint, PlanTarget, render_plan

#: counts timing checks skipped because the host was busy; fails a run with too many
pytest_plugins = ["busy_skips"]

REPO = Path(__file__).resolve().parent.parent

#: The verdict this host's kernel should earn: "fixed" past the MMF_MULTIPROCESS fix,
#: "regressed" on a 4.8..fix kernel (tests follow the kernel, not a post-fix assumption).
HOST_VERDICT = {"fixed": "fixed", "regressed": "regressed"}.get(
    droidoom.analysis.kernel_expectation(os.uname().release), "inconclusive"
)

pytest_plugins = ["adb_fixtures"] if (Path(__file__).parent / "adb_fixtures.py").exists() else []


T = TypeVar("T")


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
os.environ.setdefault("DROIDOOM_TEST_SESSION", f"{os.getpid()}-{time.time_ns()}")
SESSION_MARK = f"DROIDOOM_TEST_SESSION={os.environ['DROIDOOM_TEST_SESSION']}"
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


def cmdline(pid: int | str) -> bytes:
    """A process's NUL-separated command line (b"" once it has gone)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def comm(pid: int | str) -> str:
    """A process's name (`/proc/PID/comm`; "" once it has gone)."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def peer_daemon_pids() -> set[int]:
    """Pids of the test daemons this session started (adbd peers and their root-side
    stand-ins: `su`'s daemon, traced), alive or orphaned."""
    return {int(d) for d in os.listdir("/proc") if d.isdigit()
            and (b"adbd_peer.py" in (c := cmdline(d)) or b"peer_tools/_" in c)
            and _ours(int(d))}  # fmt: skip


@pytest.fixture(scope="session", autouse=True)
def no_peer_daemon_left_behind():
    """After the last test: every adbd peer and stand-in daemon of this session is gone
    (set up first, torn down last: after every other fixture has stopped its peers)."""
    yield
    deadline = time.monotonic() + 10
    while (left := peer_daemon_pids()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not left, f"test daemons outlived the session: {sorted(left)[:10]}"


@pytest.fixture(scope="module", autouse=True)
def no_helper_left_behind():
    """No droidoom-helper of this session outlives a test module (a /proc scan costs ~80 ms
    on a busy host: once per module, not twice per test)."""
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


def local_lock_owner(lock_dir: str | Path) -> dict[str, str]:
    """The owner file of the `--local` run holding the lock in `lock_dir` ({} if none)."""
    for lock in Path(lock_dir).glob("droidoom-lock*"):
        try:
            text = (lock / "owner").read_text()
        except OSError:
            continue
        return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    return {}


def wait_local_recording(proc, lock_dir: str | Path, writes: int = 1000) -> dict[str, str]:
    """Block until the `--local` run `proc` has recorded `writes` timed writes (a
    condition, not a fixed sleep: a loaded machine only makes it take longer); return
    its lock owner info (run_id, workdir, ...)."""
    from droidoom.protocol import HEADER_SIZE, RECORD_SIZE

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the run ended before it was recording: {proc.communicate()}"
        o = local_lock_owner(lock_dir)
        rec = Path(o.get("workdir", "/nonexistent")) / f"records-{o.get('run_id')}.bin"
        try:
            if rec.stat().st_size >= HEADER_SIZE + writes * RECORD_SIZE:
                return o
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError("the run never started recording")


def interrupt_cli(out: Path, *args: str, writes: int = 1000):
    """Start `droidoom profile --out OUT ARGS`, send SIGINT once it has recorded `writes`
    writes, return (returncode, stderr, run_dir)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "droidoom", "profile", "--out", str(out), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_signals,
    )
    try:
        wait_local_recording(proc, os.environ["DROIDOOM_LOCK_DIR"], writes)
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


def measure_again(
    measure: Callable[[int], T], settled: Callable[[T], bool], attempts: int = 3
) -> tuple[T, bool]:
    """`measure(attempt)` until `settled(result)`, up to `attempts` times, as a user runs
    again a measurement the host disturbed (a timing verdict on a shared machine says when
    another job slowed part of it). Returns the last result and whether it settled."""
    for attempt in range(attempts):
        result = measure(attempt)
        if settled(result):
            return result, True
    return result, False


def verdict_of(run: Path) -> droidoom.analysis.Verdict:
    """The verdict of a one-device run."""
    (v,) = droidoom.analysis.verdict(droidoom.load(run), droidoom.analysis.load_meta(run))
    return v


@pytest.fixture(scope="session")
def local_run(runs_dir) -> Path:
    """A real quick profile of this host, through the CLI. Many tests read it as this
    host's typical run, so a run the host disturbed (the verdict says so, or another
    session's population came or went meanwhile) is measured again."""

    def measure(attempt: int) -> Path:
        out = runs_dir / f"local{attempt or ''}"
        wait_quiet_host(180)  # another session's population would be walked too
        p = run_cli("profile", "--local", "--quick", "--out", str(out))
        assert p.returncode == 0, p.stderr + p.stdout
        (run,) = [d for d in out.iterdir() if d.is_dir()]
        return run

    def settled(run: Path) -> bool:
        """Typical: not disturbed or busy, and every kind O(1) or O(N) (a load burst in
        one block leaves a --quick fit "inconclusive", which tests take as this host's)."""
        meta = droidoom.analysis.load_meta(run)
        v = verdict_of(run)
        fits = droidoom.analysis.scaling(droidoom.load(run))["complexity"]
        return (not v.disturbed and not v.busy and not crowd_changed(meta)
                and not (fits == "inconclusive").any())  # fmt: skip

    return measure_again(measure, settled)[0]


def require_slow_premise(local_run: Path, slow_run: Path) -> None:
    """Skip (saying why) when the slow run did not see ~1600 more processes than the local
    run: another test session's population ran during one of them (both walk it)."""
    procs = [((droidoom.analysis.load_meta(r).get("device_activity") or {}).get("before")
              or {}).get("procs") for r in (local_run, slow_run)]  # fmt: skip
    if all(isinstance(n, int) for n in procs) and procs[1] - procs[0] < 1000:
        skip_busy(f"processes on this host: {procs[0]} in the local run, {procs[1]} in the "
                  "slow one: another session's population ran meanwhile")


def foreign_helpers() -> list[int]:
    """droidoom-helper processes on this host: other sessions' when called where this
    session runs none."""
    return [int(d) for d in os.listdir("/proc") if d.isdigit() and comm(d) == "droidoom-helper"]


def wait_quiet_host(timeout: float = 20.0) -> bool:
    """True once no other session's helper runs (waits up to `timeout`). Timing
    comparisons need that: every oom_score_adj write takes the global oom_adj_mutex,
    so another session's slow multiprocess writes make ours spin or sleep on it."""
    deadline = time.monotonic() + timeout
    while foreign_helpers():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def crowd_changed(meta: dict, limit: int = 200) -> bool:
    """The host's process count moved by more than `limit` during the run (run.json's
    device_activity): another session's population came or went, and every multiprocess
    write walks it too, so the run is not this host's typical one."""
    act = meta.get("device_activity") or {}
    before, after = ((act.get(k) or {}).get("procs") for k in ("before", "after"))
    return isinstance(before, int) and isinstance(after, int) and abs(after - before) > limit


@pytest.fixture(scope="session")
def local_run_df(local_run):
    return droidoom.load(local_run)


@pytest.fixture(scope="session")
def slow_run(runs_dir, tmp_path_factory) -> Path:
    """Same spec as `local_run`, profiled while 1600 extra processes exist."""
    return profile_with_background(runs_dir / "slow", tmp_path_factory.mktemp("bg"))


def profile_with_background(out: Path, tmp: Path, n: int = 1600) -> Path:
    """`profile --local --quick` into `out` while `n` extra processes exist: its run dir."""
    bg = BackgroundPopulation(n, tmp)
    try:
        p = run_cli("profile", "--local", "--quick", "--out", str(out))
    finally:
        bg.close()
    assert p.returncode == 0, p.stderr + p.stdout
    (run,) = [d for d in out.iterdir() if d.is_dir()]
    return run
