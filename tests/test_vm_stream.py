"""A `--kernel` run's records stream to the host as they are made (issue 16): a guest that
dies mid-run (QEMU killed here) or a droidoom SIGKILLed mid-run leaves a partial run with
every write that reached the host, and the VM's watchdog follows the run's plan.

Real QEMU guests booting the cached lab kernel, real signals to pids these tests started
(QEMU is found as the child of the droidoom process the test started, never by name).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli

from droidoom import store
from droidoom.lab import follow
from droidoom.run.planned import life_seconds, planned_seconds
from droidoom.run.plans import build_plan
from droidoom.run.streamed import STREAMED, count_records
from droidoom.spec import ProfileSpec

ROOT = Path(__file__).resolve().parent.parent

#: A run paced at RATE writes/s lasts long enough (~18 s per point) to be cut mid-way.
RATE = 400
ARGS = ("--population", "0,20", "--writes", "3600", "--kinds", "single", "--rate", str(RATE),
        "--accel", "tcg")  # fmt: skip


# --------------------------------------------------------------------------- the plan's life


def test_a_long_planned_run_gets_a_watchdog_longer_than_its_plan():
    """The 900 s limit killed a 30-minute paced run (89,657 writes done, 0 saved): the
    limit is now computed from the plan, always beyond its paced duration."""
    spec = ProfileSpec(populations=(0, 200), writes=60_000, rate=50.0, kinds=("single",))
    plan = build_plan(spec.validate(), -1000)
    assert planned_seconds(plan) == pytest.approx(120_000 / 50.0)  # 40 minutes of pacing
    assert life_seconds(plan) > planned_seconds(plan) + 900
    back_to_back = build_plan(ProfileSpec(writes=2000).validate(), -1000)
    assert planned_seconds(back_to_back) == 0
    assert life_seconds(back_to_back) >= 600  # setup margin, plus writes and spawning


def test_a_replay_gets_its_trace_duration(tmp_path):
    """A replay's gaps are its pace: a 20-minute trace at the default pace plans 20 min."""
    from droidoom.protocol import PlanPoint
    from droidoom.scenario import Plan, PlanTarget

    gaps = (1_000_000,) * 1200  # 1200 writes, 1 s apart
    point = PlanPoint(0, 0, 1, "reopen", 0.0, 0, ((0, 0, 0),) * 1200, gaps)
    plan = Plan((PlanTarget(0, "single", 1),), (point,), 0, -1000)
    assert planned_seconds(plan) == pytest.approx(1200)
    assert life_seconds(plan) > 2 * 1200


# --------------------------------------------------------------------------- the stream


def test_the_follower_streams_a_growing_file_exactly(tmp_path):
    """The guest-side loop (busybox sh, as in the guest) sends every byte of a file the
    script grows, forwards stdin, keeps the script's exit code and ends before it does."""
    rec = tmp_path / "rec.bin"
    # 25 x 2999 bytes: chunks are cut mid-way at odd sizes and cross CHUNK boundaries.
    inner = (f"exec busybox sh -c 'i=0; while [ $i -lt 25 ]; do head -c 2999 /dev/urandom "
             f">> {rec}; echo progress done=$i; i=$((i+1)); sleep 0.08; done; read x; exit 7'")
    proc = subprocess.Popen(["busybox", "sh", "-c", follow.follow_script(inner, str(rec), 3)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
    time.sleep(3.0)
    proc.stdin.close()  # the host-gone signal: the script's `read` ends
    out, rc = proc.stdout.read().decode(), proc.wait(timeout=30)
    proc.stdout.close()
    copy = bytearray()

    def sink(off: int, data: bytes) -> None:
        copy[len(copy) :] = b"\0" * max(0, off + len(data) - len(copy))
        copy[off : off + len(data)] = data

    events = [ln for ln in out.splitlines() if not follow.take(ln, 3, sink)]
    assert rc == 7
    assert bytes(copy) == rec.read_bytes() and len(copy) == 25 * 2999 > 3 * follow.CHUNK
    assert events[-1] == "progress done=24"
    before = bytes(copy)
    assert follow.take("__DD_REC 3 0 not*base64", 3, sink)  # a cut line: taken, dropped
    assert follow.take("__DD_REC 9 0 AAAA", 3, sink) and bytes(copy) == before  # not ours


# --------------------------------------------------------------------------- real guests


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def _qemu_child(pid: int) -> int | None:
    """The QEMU process droidoom process `pid` started (its child), if any."""
    for c in _children(pid):
        try:
            if b"qemu-system" in Path(f"/proc/{c}/cmdline").read_bytes():
                return c
        except OSError:
            continue
    return None


def _start(kernels, out: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "droidoom", "profile", "--kernel", str(kernels["fixed"]),
         *ARGS, "--out", str(out)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip


def _reap(proc: subprocess.Popen) -> None:
    """The background `profile` (ours: started by `_start`) gone and its pipe closed."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    proc.stderr.close()


def _wait_streamed(out: Path, records: int, proc: subprocess.Popen, timeout: float = 400) -> Path:
    """The run dir once its host copy holds `records` records."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for f in out.glob(f"*/{STREAMED}"):
            try:
                if count_records(f.read_bytes()) >= records:
                    return f.parent
            except OSError:
                pass
        assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
        time.sleep(0.2)
    raise AssertionError(f"no {records} records streamed in {timeout} s")


@pytest.fixture(scope="module")
def kernels():
    from droidoom.lab import build

    if not os.path.exists("/usr/bin/qemu-system-x86_64"):
        pytest.skip("qemu-system-x86_64 missing: apt-get install qemu-system-x86")
    return {"fixed": build.build("fixed").image}


def test_qemu_killed_mid_run_keeps_what_reached_the_host(kernels, tmp_path):
    """QEMU dies mid-run (SIGKILL to the QEMU this run started): the run is partial and
    holds at least every write that had reached the host before the kill (old code: the
    records lived in the guest's RAM, 0 saved)."""
    out = tmp_path / "out"
    proc = _start(kernels, out)
    try:
        run = _wait_streamed(out, 1000, proc)
        qemu = _qemu_child(proc.pid)
        assert qemu is not None, "no QEMU child of the droidoom process"
        seen = count_records((run / STREAMED).read_bytes())
        os.kill(qemu, signal.SIGKILL)
        err = proc.stderr.read().decode()
        rc = proc.wait(timeout=300)
    finally:
        _reap(proc)
    assert rc == 1, err[-2000:]
    meta = json.loads((run / "run.json").read_text())
    samples = store.load(run)
    assert meta["status"] == "partial"
    assert len(samples) >= seen >= 1000 and meta["writes_recorded"] == len(samples)
    assert "reached the host" in meta["reason"], meta["reason"]
    assert sorted(samples["seq"]) == list(range(len(samples)))  # whole, in order
    assert not (run / STREAMED).exists()  # all of it is in samples.parquet


@pytest.mark.parametrize("meet", ["report", "recover"])
def test_sigkilled_kernel_run_is_marked_partial_by_the_next_command(kernels, tmp_path, meet):
    """droidoom SIGKILLed mid-run (QEMU dies with it): run.json said "running" forever and
    report suggested a useless recover. The next command marks it partial with the writes
    that reached the host, saying why."""
    out = tmp_path / "out"
    proc = _start(kernels, out)
    try:
        run = _wait_streamed(out, 1000, proc)
        qemu = _qemu_child(proc.pid)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        _reap(proc)
    deadline = time.monotonic() + 30
    while qemu is not None and Path(f"/proc/{qemu}").exists() and time.monotonic() < deadline:
        time.sleep(0.1)  # PR_SET_PDEATHSIG: QEMU follows droidoom
    assert json.loads((run / "run.json").read_text())["status"] == "running"
    held = count_records((run / STREAMED).read_bytes())
    p = run_cli("report", str(run)) if meet == "report" else run_cli("recover", str(run))
    assert p.returncode == 0, p.stdout + p.stderr
    said = " ".join((p.stdout + p.stderr).split())
    assert "the VM died with the run" in said and f"{held} writes reached the host" in said
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "partial" and meta["writes_recorded"] == held >= 1000
    assert len(store.load(run)) == held
    assert not (run / STREAMED).exists()
    again = run_cli("report", str(run))  # settled once: no second notice
    assert "died with the run" not in again.stderr


def test_a_live_kernel_run_is_left_alone(kernels, tmp_path):
    """While the run lives (its droidoom holds the copy's flock), report does not mark it."""
    out = tmp_path / "out"
    proc = _start(kernels, out)
    try:
        run = _wait_streamed(out, 200, proc)
        p = run_cli("report", str(run))
        assert json.loads((run / "run.json").read_text())["status"] == "running", p.stderr
        assert "died with the run" not in p.stdout + p.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=300)
        finally:
            _reap(proc)


def test_the_vm_watchdog_follows_the_plan(kernels, tmp_path):
    """A run asks its VM for the plan's life (here > 900 s from boot, the old fixed limit)."""
    from droidoom.lab.qemu import VmSpec
    from droidoom.targets.vm import VmTarget

    t = VmTarget(VmSpec(kernels["fixed"], accel="tcg", timeout=60))
    try:
        assert t.machine is not None and t.machine.limit_s == pytest.approx(60, abs=1)
        spec = ProfileSpec(populations=(0,), kinds=("single",), writes=60_000, rate=50.0)
        plan = build_plan(spec.validate(), -1000)
        t.expect_run(life_seconds(plan))
        assert t.machine.limit_s > planned_seconds(plan) > 900
        t.expect_run(10)  # never shorter than already allowed
        assert t.machine.limit_s > planned_seconds(plan)
        assert t.sh("echo ok").stdout == "ok\n"
    finally:
        t.close()



# --------------------------------------------------------------------------- meeting a dead run


def _dead_vm_run(tmp_path: Path) -> tuple[Path, int]:
    """A run dir as a SIGKILLed `--kernel` run leaves it: run.json "running" (made in
    QEMU), no samples, records-streamed.bin with what reached the host, nobody holding
    its flock. Its records are real: this host's helper ran the run's own plan."""
    from droidoom.native import binary_path
    from droidoom.protocol import render_plan

    folder = tmp_path / "runs"
    p = run_cli("profile", "--local", "--population", "0,5", "--kinds", "single", "--writes",
                "300", "-o", str(folder))  # fmt: skip
    assert p.returncode == 0, p.stderr
    (run,) = folder.iterdir()
    meta = json.loads((run / "run.json").read_text())
    plan = build_plan(ProfileSpec.from_dict(meta["spec"]), meta["adj_min"])
    (tmp_path / "plan.txt").write_text(render_plan(plan.targets, plan.points, plan.writer))
    subprocess.run([str(binary_path("x86_64")), "run", str(tmp_path / "plan.txt"),
                    str(run / STREAMED)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   check=True, timeout=120)  # fmt: skip
    data = (run / STREAMED).read_bytes()
    cut = len(data) - 32 * 100 - 7  # the last 100 records never arrived, one more cut
    (run / STREAMED).write_bytes(data[:cut])
    (run / "samples.parquet").unlink()
    meta.update(status="running", target={**meta["target"], "transport": "qemu"})
    for key in ("reason", "writes_recorded", "finished"):
        meta.pop(key, None)
    (run / "run.json").write_text(json.dumps(meta))
    return run, count_records(data[:cut])


def test_a_profile_into_the_folder_settles_a_dead_kernel_run(tmp_path):
    run, held = _dead_vm_run(tmp_path)
    p = run_cli("profile", "--local", "--population", "0", "--kinds", "single", "--writes",
                "50", "-o", str(run.parent))  # fmt: skip
    assert p.returncode == 0, p.stderr
    said = " ".join(p.stderr.split())
    assert "an earlier run:" in said and f"{held} writes reached the host" in said, said
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "partial" and meta["writes_recorded"] == held == 600 - 101
    assert len(store.load(run)) == held and not (run / STREAMED).exists()


def test_load_reads_a_dead_kernel_run_without_writing_and_report_settles_it(tmp_path):
    """`droidoom.load()` is a reader: it never rewrites a run (issue 19: opening a run
    changes nothing); the commands that meet the run (report, compare, recover, profile
    into the folder) settle it."""
    import droidoom

    run, held = _dead_vm_run(tmp_path)
    before = (run / "run.json").read_bytes()
    try:
        droidoom.load(run.parent)
    except droidoom.errors.DataError:
        pass  # nothing saved yet: no samples to load
    assert (run / "run.json").read_bytes() == before and (run / STREAMED).exists()
    p = run_cli("report", str(run.parent))
    assert "died with the run" in " ".join(p.stderr.split()), p.stderr
    assert len(droidoom.load(run)) == held


def test_a_watchdog_that_fires_mid_run_says_so_and_keeps_what_arrived(kernels, tmp_path,
                                                                      monkeypatch):
    """The watchdog is a last resort, never silent: shrunk here to end a paced run mid-way
    (the computed life is far longer), the run says the VM hit its limit and keeps the
    writes that reached the host."""
    from droidoom.lab.qemu import VmSpec
    from droidoom.run import runner
    from droidoom.targets.vm import VmTarget

    monkeypatch.setattr(runner, "life_seconds", lambda plan: 20.0)  # 50 s planned
    spec = ProfileSpec(populations=(0,), kinds=("single",), writes=20_000, rate=400.0,
                       threads=2)  # fmt: skip
    with VmTarget(VmSpec(kernels["fixed"], accel="tcg", timeout=20)) as t:
        result = runner.profile(t, spec, tmp_path)
    assert result.status == "partial"
    assert "hit its" in result.meta["reason"] and "limit" in result.meta["reason"]
    assert len(result.samples) > 0 and "reached the host" in result.meta["reason"]
    assert result.meta["writes_recorded"] == len(result.samples)
