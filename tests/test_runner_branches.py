"""Each way a run can end, in-process on an in-memory target (tests/fake_target.py): what
run.json says, which samples are kept, what stays on the device and whether its lock is
released, taken in a blink each. The end-to-end tests (test_faults_local.py,
test_faults_adb.py) keep checking the same branches through real processes and links."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fake_target import SERIAL, FakeTarget, Fault

from droidoom import store
from droidoom.errors import HelperError
from droidoom.run import runner
from droidoom.spec import ProfileSpec

#: 40 timed writes in three points (populations 0, 10, 0 again: the "updown" order) of
#: 10, 20 and 10 writes: small enough to plan, play and decode in milliseconds
SPEC = ProfileSpec(populations=(0, 10), writes=20, kinds=("single",), warmup=0)
#: stdout lines of the fake `run` before the first point: hello, facts, calib, the
#: target, writer; then per point a `point` and a `progress` line
HEAD = 5
FIRST_POINT = 10  # writes of the first point


def run_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((path / store.RUN_JSON).read_text())
    return data


def saved(path: Path) -> int:
    """Rows in the run's samples.parquet (0 without one)."""
    f = path / store.SAMPLES
    return len(pd.read_parquet(f)) if f.exists() else 0


def profile(t: FakeTarget, out: Path, **kw: Any) -> runner.RunResult:
    return runner.profile(t, SPEC, out, run_id="r1", **kw)


def device_files(t: FakeTarget, res: runner.RunResult) -> tuple[str, str]:
    wd = t.workdir()
    return f"{wd}/plan-{res.path.name}.txt", f"{wd}/records-{res.path.name}.bin"


def verbs_after(t: FakeTarget, verb: str) -> list[str]:
    """The target commands issued after the first `verb` one."""
    names = [v for v, _ in t.log]
    return names[names.index(verb) + 1 :]


def test_complete_run_keeps_every_write_and_clears_the_device(tmp_path):
    t = FakeTarget()
    res = profile(t, tmp_path)
    meta = run_json(res.path)
    planned = meta["writes_planned"]
    assert res.status == meta["status"] == "complete" and meta["reason"] is None
    assert planned == 40 and meta["writes_recorded"] == meta["writes_on_device"] == planned
    assert saved(res.path) == planned
    assert meta["helper_exit"] == 0 and meta["target"]["transport"] == "fake"
    assert not any(t.exists(f) for f in device_files(t, res))  # a complete run cleans up
    assert not t.lock_held and not t.kept_workdir
    lock = f"{t.workdir()}/droidoom-lock-{SERIAL}"  # named after the device's own serial
    assert any(lock in script for v, script in t.log if v == "sh" and "mkdir" in script)


def test_link_lost_mid_run_keeps_the_run_partial_and_the_device_as_it_is(tmp_path):
    """The device goes away after the first point: nothing can be pulled, run.json says
    how far the device got, and nobody waits on it (its lock is left to go stale)."""
    t = FakeTarget(fault=Fault("link_lost", after=HEAD + 2))
    res = profile(t, tmp_path)
    meta = run_json(res.path)
    assert res.status == meta["status"] == "partial"
    assert "the fake link dropped" in meta["reason"]
    assert meta["writes_recorded"] == 0 and meta["writes_on_device"] == FIRST_POINT
    assert not (res.path / store.SAMPLES).exists() and res.samples.empty
    plan, records = device_files(t, res)
    assert t.exists(records) and t.exists(plan)  # `droidoom recover` fetches them later
    assert t.lock_held  # abandoned, not released: the link is gone
    assert verbs_after(t, "close") == ["pull"]  # one try to pull, then no more waiting
    assert meta["device_activity"] == {"before": meta["device_activity"]["before"], "after": {}}


def test_helper_crash_keeps_what_it_recorded(tmp_path):
    """The helper dies after the first point (no `done`, exit 139, half a record at the
    end of its file): the whole records are kept, the torn one dropped, the run partial;
    off this host a stream ending without `done` is taken for a lost link."""
    t = FakeTarget(fault=Fault("crash", after=HEAD + 2, short_records=True))
    res = profile(t, tmp_path)
    meta = run_json(res.path)
    assert meta["status"] == "partial" and meta["helper_exit"] == 139
    assert "stopped without finishing (exit 139)" in meta["reason"]
    assert meta["writes_recorded"] == len(res.samples) == FIRST_POINT
    assert saved(res.path) == FIRST_POINT
    assert set(res.samples["population"]) == {0}  # the first point's writes, labelled
    assert t.lock_held  # link_lost: no cleanup round trips


def test_helper_crash_before_hello_is_explained_by_its_stderr(tmp_path):
    """A wrapper or the helper dies before saying hello: the reason quotes its stderr
    (Process.stderr_tail), and it is not taken for a lost link."""
    t = FakeTarget(fault=Fault("crash", after=0))
    res = profile(t, tmp_path)
    meta = run_json(res.path)
    assert meta["status"] == "partial"
    assert meta["reason"] == ("the command failed (exit 139) before the helper started: "
                              "Segmentation fault")  # fmt: skip
    assert meta["writes_recorded"] == 0 and not t.lock_held  # released: the link is fine
    assert t.exists(device_files(t, res)[1])  # a partial run leaves its files


def test_device_disk_full_while_recording_keeps_the_writes_before(tmp_path):
    t = FakeTarget(fault=Fault("device_full", after=HEAD + 3))  # during the second point
    res = profile(t, tmp_path)
    meta = run_json(res.path)
    assert meta["status"] == "partial" and meta["helper_exit"] == 4
    assert meta["reason"] == "helper error: records file: write failed: No space left on device"
    assert meta["writes_recorded"] == len(res.samples) == saved(res.path) == FIRST_POINT
    assert not t.lock_held and all(t.exists(f) for f in device_files(t, res))


def test_helper_error_before_any_write_fails_the_run_and_leaves_no_directory(tmp_path):
    t = FakeTarget(fault=Fault("device_full", after=HEAD))
    with pytest.raises(HelperError, match="No space left on device"):
        profile(t, tmp_path)
    assert not (tmp_path / "r1").exists()  # nothing measured: no run directory
    assert not t.lock_held


def test_disk_full_pushing_the_plan_ends_the_run_before_the_helper(tmp_path):
    t = FakeTarget(fault=Fault("push_full"))
    res = profile(t, tmp_path)
    meta = run_json(res.path)
    plan, _ = device_files(t, res)
    assert meta["status"] == "partial" and meta["reason"] == f"{plan}: No space left on device"
    assert meta["writes_recorded"] == 0 and meta["helper_exit"] is None
    assert "spawn" not in [v for v, _ in t.log] and not t.lock_held


def test_disk_full_pulling_from_a_device_leaves_the_records_there(tmp_path):
    t = FakeTarget(fault=Fault("pull_full"))
    res = profile(t, tmp_path)
    meta = run_json(res.path)
    assert meta["status"] == "partial"
    assert meta["reason"].startswith("records could not be pulled (")
    assert "No space left on device" in meta["reason"]
    assert meta["writes_recorded"] == 0 and meta["writes_on_device"] == 40
    assert t.exists(device_files(t, res)[1]) and not t.kept_workdir
    assert t.lock_held  # treated as a lost link: cleanup does not wait on the device


def test_disk_full_pulling_on_this_host_keeps_the_workdir_and_says_how_to_fetch(tmp_path):
    """On this host (Target.is_remote False) the workdir goes at close: the runner asks
    the target to keep it (Target.keep_workdir) and names the recover command."""
    wd = tmp_path / "wd"
    wd.mkdir()
    t = FakeTarget(fault=Fault("pull_full"), remote=False, workdir=str(wd))
    res = profile(t, tmp_path / "out")
    meta = run_json(res.path)
    assert meta["status"] == "partial" and t.kept_workdir
    assert meta["reason"].endswith(f"; `droidoom recover --local {res.path}` fetches them")
    assert Path(device_files(t, res)[1]).is_file() and not t.lock_held


def test_helper_interrupted_on_the_device(tmp_path):
    """The helper stops on a signal of its own (`done status=interrupted`)."""
    t = FakeTarget(fault=Fault("interrupted", after=HEAD + 2))
    res = profile(t, tmp_path)
    meta = run_json(res.path)
    assert meta["status"] == "partial" and meta["helper_exit"] == 130
    assert meta["reason"] == "the helper was interrupted (signal)"
    assert meta["writes_recorded"] == saved(res.path) == FIRST_POINT and not t.lock_held


def test_cancel_stops_reading_and_keeps_the_run(tmp_path):
    cancel = threading.Event()
    cancel.set()  # e.g. the farm's Ctrl-C: the first line read ends the stream
    t = FakeTarget()
    res = profile(t, tmp_path, cancel=cancel)
    meta = run_json(res.path)
    assert meta["status"] == "partial" and meta["reason"] == "cancelled"
    assert t.process is not None and t.process.served == 1
    assert not t.lock_held
