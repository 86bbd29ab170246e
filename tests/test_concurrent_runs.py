"""A run that another droidoom run shares the target with, unseen by the lock (issue 16).

Two `--local` runs with different DROIDOOM_LOCK_DIR do not see each other's lock; the
activity sampled when the lock is taken and released saw a run that started and ended
inside ours not at all. Each sweep point now counts the other runs' helpers: real
processes, real runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import default_signals, run_cli, wait_local_recording

from droidoom.run.others import other_helpers
from droidoom.targets.local import LocalTarget

#: 4 s per point at 100 writes/s, 7 points (0, 10, 20, 30, 20, 10, 0): ~28 s.
LONG = ("--local", "--population", "0,10,20,30", "--writes", "400", "--rate", "100",
        "--kinds", "single")  # fmt: skip
#: 7 s of writes: longer than a point of LONG, so alive at one of its point starts.
SHORT = ("--local", "--population", "0", "--writes", "700", "--rate", "100", "--kinds", "single")


def test_a_run_inside_ours_is_a_disturbed_notice(tmp_path):
    lock_a = os.environ["DROIDOOM_LOCK_DIR"]
    lock_b = tempfile.mkdtemp(prefix="droidoom-locks-b-")  # 0700: a private lock dir
    a = subprocess.Popen([sys.executable, "-m", "droidoom", "profile", *LONG, "--out",
                          str(tmp_path / "a")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, preexec_fn=default_signals)  # fmt: skip
    try:
        wait_local_recording(a, lock_a, 100)  # A has sampled "before" and is writing
        b = run_cli("profile", *SHORT, "--out", str(tmp_path / "b"),
                    env={**os.environ, "DROIDOOM_LOCK_DIR": lock_b})  # fmt: skip
        assert b.returncode == 0, b.stdout + b.stderr
        assert a.poll() is None, "A ended before B: B was not inside A"
        _, err = a.communicate(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
            a.wait()
        shutil.rmtree(lock_b, ignore_errors=True)
    assert a.returncode == 0, err
    (run,) = (tmp_path / "a").iterdir()
    meta = json.loads((run / "run.json").read_text())
    act = meta["device_activity"]
    assert act["before"].get("helpers", 0) == 0 and act["after"].get("helpers", 0) == 0
    assert any(d["helpers"] >= 1 for d in act["during"]), act
    assert any(n.startswith("disturbed: another droidoom run") for n in meta["notices"])
    assert "disturbed: another droidoom run" in " ".join(err.split())


def test_our_own_helper_and_its_processes_are_not_counted():
    """A helper's own targets and population are forks named droidoom-helper: only other
    top-level helpers count (else every run would call itself disturbed)."""
    from droidoom.native import binary_path

    helper = binary_path("x86_64")
    plan = Path(tempfile.mkdtemp()) / "plan.txt"
    from droidoom.protocol import render_plan
    from droidoom.run.plans import build_plan
    from droidoom.spec import ProfileSpec

    p = build_plan(ProfileSpec(populations=(30,), kinds=("single",), writes=2000, rate=500,
                               threads=1).validate(), -1000)  # fmt: skip
    plan.write_text(render_plan(p.targets, p.points, p.writer, p.measure))
    proc = subprocess.Popen([str(helper), "run", str(plan), str(plan.parent / "rec.bin")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    t = LocalTarget()
    try:
        for line in proc.stdout:
            if line.startswith("point "):
                break
        assert other_helpers(t, proc.pid) == 0  # 30 forks of it alive, none counted
        assert other_helpers(t, 1) >= 1  # seen from another run: ours is one run
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        proc.stdout.close()
        t.close()
        for f in plan.parent.iterdir():
            f.unlink()
        plan.parent.rmdir()
