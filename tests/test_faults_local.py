"""Faults on this host (issue 13.2, 13.3, 13.5): SIGTERM, SIGHUP, SIGKILL, a full disk and
a second concurrent run, with the real CLI, real signals, real tracefs and a real tmpfs.

Each test has its own lock directory (DROIDOOM_LOCK_DIR), so it meets only its own runs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    default_signals,
    local_lock_owner,
    run_cli,
    wait_local_recording,
    wait_no_helpers,
)

import droidoom
from droidoom import signals
from droidoom.protocol import HEADER_SIZE, RECORD_SIZE

#: ~12 s paced sweep (2 points x 3 kinds x 4000 writes at 2000/s): long enough to signal.
LONG = ["--population", "0,200", "--writes", "4000", "--rate", "2000"]
ROOT = os.geteuid() == 0
TRACEFS = Path("/sys/kernel/tracing")


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    locks = tmp_path / "locks"
    locks.mkdir()
    return dict(os.environ, DROIDOOM_LOCK_DIR=str(locks), COLUMNS="200")


def start(out: Path, env: dict, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "droidoom", "profile", "--local", *LONG, *args, "-o", str(out)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=default_signals,
    )  # fmt: skip


def owner(env: dict) -> dict[str, str]:
    """The live run's lock owner file (run id, workdir, ...), once the lock is taken."""
    return local_lock_owner(env["DROIDOOM_LOCK_DIR"])


def wait_recording(env: dict, proc: subprocess.Popen, writes: int = 1000) -> dict[str, str]:
    return wait_local_recording(proc, env["DROIDOOM_LOCK_DIR"], writes)


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    try:
        return proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def meta_of(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())


needs_ftrace = pytest.mark.skipif(
    not (ROOT and (TRACEFS / "instances").is_dir()), reason="needs root and tracefs instances"
)


@needs_ftrace
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_save_the_run_like_ctrl_c(tmp_path, env, sig, code):
    proc = start(tmp_path / "runs", env, "--capture", "ftrace")
    try:
        o = wait_recording(env, proc)
        proc.send_signal(sig)
    finally:
        out, err = finish(proc)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "partial" in out
    (run,) = (tmp_path / "runs").iterdir()
    meta = meta_of(run)
    name = signal.Signals(sig).name
    assert meta["status"] == "partial" and meta["reason"] == f"interrupted by {name}"
    df = droidoom.load(run)
    assert 1000 <= len(df) == meta["writes_recorded"] < 2 * 3 * 4000
    assert not (TRACEFS / "instances" / f"droidoom-{o['run_id']}").exists()  # restored
    assert not Path(o["workdir"]).exists()  # the temp workdir is gone
    assert not list(Path(env["DROIDOOM_LOCK_DIR"]).iterdir())  # lock released
    assert not wait_no_helpers()


def kill_mid_run(tmp_path: Path, env: dict) -> tuple[Path, dict, int]:
    """SIGKILL a recording run: (its run dir, lock owner, records on disk)."""
    proc = start(tmp_path / "runs", env, *(["--capture", "ftrace"] if ROOT else []))
    try:
        o = wait_recording(env, proc)
        proc.kill()  # no handler, no cleanup: what a crash or the OOM killer does
    finally:
        finish(proc)
    assert not wait_no_helpers()  # its helper saw stdin close and stopped
    rec = Path(o["workdir"]) / f"records-{o['run_id']}.bin"
    n = (rec.stat().st_size - HEADER_SIZE) // RECORD_SIZE
    (run,) = (tmp_path / "runs").iterdir()
    assert meta_of(run)["status"] == "running" and not (run / "samples.parquet").exists()
    if ROOT and (TRACEFS / "instances").is_dir():
        assert (TRACEFS / "instances" / f"droidoom-{o['run_id']}").is_dir()  # left armed
    return run, o, n


def check_finished(run: Path, o: dict, n: int, env: dict) -> None:
    meta = meta_of(run)
    assert meta["status"] == "partial" and "killed" in meta["reason"]
    assert meta["writes_recorded"] == n and len(droidoom.load(run)) == n
    assert not (TRACEFS / "instances" / f"droidoom-{o['run_id']}").exists()
    assert not Path(o["workdir"]).exists()


def test_after_sigkill_the_next_run_finishes_what_was_left(tmp_path, env):
    run, o, n = kill_mid_run(tmp_path, env)
    p = run_cli("doctor", "--local", env=env)
    assert p.returncode == 0 and "cut-short" in p.stdout and o["run_id"] in p.stdout
    p = run_cli("profile", "--local", "--population", "0", "--kinds", "single",
                "--writes", "50", "-o", str(tmp_path / "next"), env=env)  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "stale" in p.stderr and f"recovered {n} writes" in p.stderr
    check_finished(run, o, n, env)


def test_after_sigkill_recover_local_finishes_what_was_left(tmp_path, env):
    run, o, n = kill_mid_run(tmp_path, env)
    p = run_cli("recover", "--local", "-o", str(tmp_path / "runs"), env=env)
    assert p.returncode == 0, p.stderr
    assert f"recovered {n} writes" in p.stdout
    check_finished(run, o, n, env)
    p = run_cli("recover", "--local", "-o", str(tmp_path / "runs"), env=env)
    assert "holds nothing" in p.stdout


def test_after_sigkill_report_advises_a_recover_that_works(tmp_path, env):
    """report advised `droidoom recover RUN_DIR` after a local SIGKILL, which then looked for
    an adb server ("no adb server"). The hint is now the command for the target run.json
    names, with the real path, and running it as printed (RUN alone, too) recovers."""
    import re
    import shlex

    run, o, n = kill_mid_run(tmp_path, env)
    p = run_cli("report", str(run), env=env)
    assert p.returncode == 2, p.stdout + p.stderr
    err = " ".join(p.stderr.split())
    m = re.search(r"`(droidoom recover [^`]+)`", err)
    assert m and m.group(1) == f"droidoom recover --local {run}", err
    p = run_cli(*shlex.split(m.group(1))[1:], env=env)
    assert p.returncode == 0 and f"recovered {n} writes" in p.stdout, p.stdout + p.stderr
    check_finished(run, o, n, env)


def test_recover_run_alone_works_out_where_it_was_made(tmp_path, env):
    """`droidoom recover RUN` with no --local/--serial: run.json says where the run was
    made; a QEMU guest's run is answered in words (its records died with the guest)."""
    run, o, n = kill_mid_run(tmp_path, env)
    p = run_cli("recover", str(run), env=env)
    assert p.returncode == 0 and f"recovered {n} writes" in p.stdout, p.stdout + p.stderr
    meta = meta_of(run)
    meta["target"]["transport"] = "qemu"
    (run / "run.json").write_text(json.dumps(meta))
    p = run_cli("recover", str(run), env=env)
    assert p.returncode == 2 and "QEMU guest" in p.stderr and "adb" not in p.stderr, p.stderr


def test_a_second_run_on_a_busy_host_is_refused(tmp_path, env):
    proc = start(tmp_path / "runs", env)
    try:
        o = wait_recording(env, proc)
        p = run_cli("profile", "--local", "--quick", "-o", str(tmp_path / "second"), env=env)
        proc.send_signal(signal.SIGINT)
    finally:
        finish(proc)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    assert "is busy" in p.stderr and o["run_id"] in p.stderr and f"pid {proc.pid}" in p.stderr
    assert not (tmp_path / "second").exists() or not any((tmp_path / "second").iterdir())
    (run,) = (tmp_path / "runs").iterdir()
    activity = meta_of(run)["device_activity"]  # what else ran, before and after
    assert activity["before"]["procs"] > 0 and activity["after"]["procs"] > 0
    assert "loadavg" in activity["before"]


def small_tmpfs(mnt: Path, options: str):
    """A tmpfs of its own at `mnt` (root only; skips where mounting is not allowed),
    unmounted after."""
    if not ROOT:
        pytest.skip("mounting a tmpfs needs root")
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mnt)],
                       capture_output=True, text=True)  # fmt: skip
    if p.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


@pytest.fixture
def tiny_disk(tmp_path):
    yield from small_tmpfs(tmp_path / "full", "size=16k")


def test_disk_full_says_enospc_keeps_what_fits_and_recover_fetches_the_rest(tiny_disk, env):
    args = ["--population", "0", "--kinds", "single", "--writes", "30000"]
    p = run_cli("profile", "--local", *args, "-o", str(tiny_disk), env=env)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    said = " ".join(p.stdout.split())  # long paths wrap even a wide terminal
    assert "ENOSPC" in said and "recover --local" in said
    (run,) = tiny_disk.iterdir()
    meta = meta_of(run)
    assert meta["status"] == "partial" and "ENOSPC" in meta["reason"]
    assert len(droidoom.load(run)) == meta["writes_recorded"] < 30000
    subprocess.run(["mount", "-o", "remount,size=16m", str(tiny_disk)], check=True)
    p = run_cli("recover", "--local", "-o", str(tiny_disk), env=env)
    assert p.returncode == 0 and "recovered 30000 writes" in p.stdout, p.stdout + p.stderr
    assert len(droidoom.load(run)) == 30000


def signal_burst(proc: subprocess.Popen, sig: int, seconds: float = 3.0) -> int:
    """`sig`, then again and again 0-50 ms apart for `seconds` (or until the process
    ends): what an impatient user (or a CI runner) does while the run saves. The count."""
    rng = random.Random(proc.pid)
    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        proc.send_signal(sig)  # our own child: we started it
        sent += 1
        time.sleep(rng.uniform(0, 0.05))
    return sent


@pytest.mark.parametrize(
    "sig, code, why", [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")]
)
def test_ctrl_c_again_while_saving_is_held_off_and_the_run_is_saved(tmp_path, env, sig, code,
                                                                    why):  # fmt: skip
    # Issue 16: a second Ctrl-C during the save left 0 writes and deleted the workdir.
    proc = start(tmp_path / "runs", env)
    try:
        o = wait_recording(env, proc, writes=3000)
        sent = signal_burst(proc, sig)
    finally:
        out, err = finish(proc)
    assert sent > 1
    assert proc.returncode == code, err
    assert "Traceback" not in err, err
    assert "saving, please wait" in err  # the later requests were heard, and held off
    (run,) = (tmp_path / "runs").iterdir()
    meta = meta_of(run)
    assert meta["status"] == "partial" and meta["reason"] == f"interrupted by {why}"
    df = droidoom.load(run)
    assert 3000 <= len(df) == meta["writes_recorded"] >= meta["writes_on_device"]
    assert not Path(o["workdir"]).exists()  # removed only once the samples were safe
    assert not list(Path(env["DROIDOOM_LOCK_DIR"]).iterdir())  # lock released
    assert not wait_no_helpers()


@pytest.fixture
def tiny_tmpdir(tmp_path):
    """TMPDIR on a 64 KiB tmpfs of its own."""
    yield from small_tmpfs(tmp_path / "tmp", "size=64k,mode=1777")


def in_tmpdir(env: dict, tmpdir: Path) -> dict:
    """`env` with TMPDIR there, and the private lock and work directory in its default,
    $TMPDIR/droidoom-<uid> (the session's DROIDOOM_LOCK_DIR would move it elsewhere)."""
    keep = {k: v for k, v in env.items() if k not in ("DROIDOOM_LOCK_DIR", "XDG_RUNTIME_DIR")}
    return dict(keep, TMPDIR=str(tmpdir))


@pytest.mark.parametrize("writes", [30000, 3000])  # the plan does not fit; the records do not
def test_a_full_tmpdir_names_itself_and_leaves_no_temp_file(tiny_tmpdir, env, tmp_path, writes):
    # Issue 16: each run left a tmp*.txt plan behind and blamed "the run directory".
    args = ["--population", "0", "--kinds", "single", "--writes", str(writes)]
    p = run_cli("profile", "--local", *args, "-o", str(tmp_path / "runs"),
                env=in_tmpdir(env, tiny_tmpdir))  # fmt: skip
    said = " ".join((p.stdout + p.stderr).split())
    assert p.returncode == 1 and "Traceback" not in p.stderr, said
    assert "No space left on device" in said and str(tiny_tmpdir) in said, said
    assert "the run directory" not in said
    # no plan, no workdir, no pulled records: at most the (empty) private directory
    left = [p for p in tiny_tmpdir.rglob("*") if p.name != f"droidoom-{os.getuid()}"]
    assert not left, left


def test_records_that_fill_most_of_tmpdir_are_saved_not_copied_there(tiny_tmpdir, env, tmp_path):
    # They were copied into a temp dir beside themselves: ENOSPC, 0 saved, workdir deleted.
    args = ["--population", "0", "--kinds", "single", "--writes", "1200"]  # ~40 KiB records
    p = run_cli("profile", "--local", *args, "-o", str(tmp_path / "runs"),
                env=in_tmpdir(env, tiny_tmpdir))  # fmt: skip
    assert p.returncode == 0, p.stdout + p.stderr
    (run,) = (tmp_path / "runs").iterdir()
    assert meta_of(run)["status"] == "complete" and len(droidoom.load(run)) >= 1200
    left = [p for p in tiny_tmpdir.rglob("*") if p.name != f"droidoom-{os.getuid()}"]
    assert not left, left  # at most the (empty) private directory


@pytest.fixture
def own_stop_signals(monkeypatch):
    """SIGINT/SIGTERM as an interactive shell leaves them, in a library caller (not the
    CLI): a suite started in the background (a CI job, `cmd &`) inherits SIGINT ignored,
    which SaveGuard keeps ignored, and an in-process CLI test earlier in the session ran
    `signals.install()`, after which a stopped guard leaves the signals ignored."""
    monkeypatch.setattr(signals, "_exits_on_stop", False)
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for s, h in old.items():
        signal.signal(s, h)


def test_save_guard_raises_the_first_stop_then_holds_off_the_rest(own_stop_signals):
    said: list[str] = []
    before = signal.getsignal(signal.SIGINT)
    with signals.SaveGuard(said.append) as guard:
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)  # the first request stops the run
        signal.raise_signal(signal.SIGINT)  # the rest wait for the save
        signal.raise_signal(signal.SIGTERM)
    assert guard.deferred == signal.SIGINT and said == [signals.SAVING] * 2
    assert signal.getsignal(signal.SIGINT) is before  # a library caller gets its handler back
    with signals.SaveGuard(said.append) as guard:
        guard.hold()  # the helper finished: only saving is left
        signal.raise_signal(signal.SIGTERM)  # held off; the runner stops after the save
    assert guard.deferred == signal.SIGTERM
    assert isinstance(signals.stop_exception(guard.deferred), signals.Terminated)
