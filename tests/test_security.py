"""A hostile local user (issue 16): planted locks, records, plans and output paths.

"Another user" is `nobody` (uid 65534): files are made here and chowned to it (the suite
runs as root). The shared temp directory is a 1777 directory of the test's own, named by
TMPDIR. Every run is a real `droidoom profile --local` (tiny), every refusal the real CLI's.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

import droidoom
from droidoom import private, store
from droidoom.errors import DataError, PermanentTargetError, UsageError
from droidoom.protocol import PROTO_VERSION, RECORD_DTYPE, RECORD_SIZE, RECORDS_MAGIC, render_plan
from droidoom.run import devlock, leftovers
from droidoom.run.recover import rebuild_plan, recover_run
from droidoom.targets.local import LocalTarget

NOBODY = 65534
TINY = ["--population", "0,50", "--kinds", "single", "--writes", "50"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="chown to nobody needs root")


def env_without_private(**extra: str) -> dict[str, str]:
    """The environment with no private-dir setting (no DROIDOOM_LOCK_DIR, no
    XDG_RUNTIME_DIR): droidoom picks its directory under TMPDIR itself."""
    env = {k: v for k, v in os.environ.items() if k not in (private.LOCK_DIR_ENV,
                                                            "XDG_RUNTIME_DIR")}  # fmt: skip
    return {**env, "COLUMNS": "200", **extra}


@pytest.fixture
def shared_tmp(tmp_path, monkeypatch) -> Path:
    """A world-writable sticky temp directory (like /tmp), named by TMPDIR for this
    process and its children; no private-dir override set."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    monkeypatch.setenv("TMPDIR", str(shared))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() caches its answer
    monkeypatch.delenv(private.LOCK_DIR_ENV, raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    yield shared
    tempfile.tempdir = None


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A real complete tiny run of this host."""
    out = tmp_path_factory.mktemp("finished")
    p = run_cli("profile", "--local", *TINY, "-o", str(out))
    assert p.returncode == 0, p.stderr
    (run,) = out.iterdir()
    assert json.loads((run / "run.json").read_text())["status"] == "complete"
    return run


def copy_run(run: Path, dest: Path, **meta_changes) -> Path:
    """A copy of `run` at `dest` (same run id), with run.json fields changed."""
    shutil.copytree(run, dest)
    meta = {**store.read_run(dest).meta, **meta_changes}
    store.write_json(dest / store.RUN_JSON, meta)
    return dest


def digest(run: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(run.iterdir())}


def forged_records(n: int) -> bytes:
    """`n` well-formed helper records (point 0, target 0), as a forger would write."""
    head = RECORDS_MAGIC + PROTO_VERSION.to_bytes(4, "little") + RECORD_SIZE.to_bytes(4, "little")
    rec = np.zeros(n, dtype=RECORD_DTYPE)
    rec["latency_ns"], rec["t_ns"] = 999_999, np.arange(n)
    return head + rec.tobytes()


def plan_text(run: Path) -> str:
    plan = rebuild_plan(store.read_run(run).meta, run)
    return render_plan(plan.targets, plan.points, plan.writer)


def give_to_nobody(*paths: Path) -> None:
    for p in paths:
        os.lchown(p, NOBODY, NOBODY)


# ------------------------------------------------------------- the private directory


def test_private_dir_is_per_user_0700_under_the_shared_tmp(shared_tmp):
    d = private.private_dir()
    st = os.lstat(d)
    assert d == shared_tmp / f"droidoom-{os.geteuid()}"
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o700
    work = Path(LocalTarget().workdir())  # the run's records and plan go here, too
    assert work.parent == d and work.name.startswith(private.WORK_PREFIX)


def test_private_dir_prefers_an_own_0700_xdg_runtime_dir(shared_tmp, tmp_path, monkeypatch):
    xdg = tmp_path / "run-user"
    xdg.mkdir(mode=0o700)
    xdg.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert private.private_dir() == xdg / "droidoom"
    xdg.chmod(0o755)  # not private: the per-uid dir under the temp dir instead
    assert private.private_dir() == shared_tmp / f"droidoom-{os.geteuid()}"


@pytest.mark.parametrize("planted", ["nobody's dir", "symlink", "group-writable"])
def test_a_planted_private_dir_is_refused_naming_owner_and_path(shared_tmp, tmp_path, planted):
    path = shared_tmp / f"droidoom-{os.geteuid()}"
    if planted == "symlink":
        (tmp_path / "elsewhere").mkdir()
        path.symlink_to(tmp_path / "elsewhere")
        give_to_nobody(path)
    else:
        path.mkdir()
        if planted == "group-writable":
            path.chmod(0o775)
        else:
            give_to_nobody(path)
    with pytest.raises(UsageError) as e:
        private.private_dir()
    said = str(e.value)
    assert str(path) in said and "remove it" in said.lower()
    assert ("lets others write" in said) if planted == "group-writable" else ("nobody" in said)


def test_a_foreign_droidoom_lock_dir_is_refused_by_profile(tmp_path):
    locks = tmp_path / "locks"
    locks.mkdir()
    give_to_nobody(locks)
    p = run_cli("profile", "--local", *TINY, "-o", str(tmp_path / "runs"),
                env={**os.environ, private.LOCK_DIR_ENV: str(locks), "COLUMNS": "300"})  # fmt: skip
    said = " ".join(p.stderr.split())
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "nobody" in said and str(locks) in said and private.LOCK_DIR_ENV in said


# ------------------------------------------------- the planted stale lock (issue 16.1)


def plant_stale_lock(shared: Path, victim: Path, *, plan: bool) -> Path:
    """As nobody would in the shared temp dir: a lock naming a dead pid and `victim`'s
    run, a workdir with forged records for it (and its plan). Returns the workdir."""
    run_id = store.read_run(victim).run_id
    work = shared / "droidoom-evil"
    work.mkdir()
    (work / f"records-{run_id}.bin").write_bytes(forged_records(4600))
    if plan:
        (work / f"plan-{run_id}.txt").write_text(plan_text(victim))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    lock = shared / "droidoom-lock"
    lock.mkdir()
    (lock / "owner").write_text(
        f"run_id={run_id}\nhost={os.uname().nodename}\nhost_pid={dead}\nhost_start=1\n"
        f"run_dir={victim}\nworkdir={work}\ncreated=1\n"
    )
    give_to_nobody(work, *work.iterdir(), lock, lock / "owner")
    return work


@pytest.mark.parametrize("plan", [True, False], ids=["with-plan", "without-plan"])
def test_a_lock_planted_in_the_shared_tmp_is_not_taken_over(
    shared_tmp, tmp_path, finished_run, plan
):
    """Root's next ordinary run neither finishes the planted "stale" run (which would
    rewrite root's complete run with 4600 forged rows) nor crashes on it."""
    victim = copy_run(finished_run, tmp_path / "out" / finished_run.name)
    before = digest(victim)
    plant_stale_lock(shared_tmp, victim, plan=plan)
    p = run_cli("profile", "--local", *TINY, "-o", str(tmp_path / "next"),
                env=env_without_private(TMPDIR=str(shared_tmp)))  # fmt: skip
    assert p.returncode == 0, p.stderr
    assert "stale" not in p.stderr and "recovered" not in p.stderr
    assert digest(victim) == before  # not a byte of the finished run changed
    assert len(droidoom.load(victim)) == 100
    mine = shared_tmp / f"droidoom-{os.geteuid()}"
    assert stat.S_IMODE(os.lstat(mine).st_mode) == 0o700 and not list(mine.iterdir())


def test_recover_local_ignores_records_planted_in_the_shared_tmp(
    shared_tmp, tmp_path, finished_run
):
    victim = copy_run(finished_run, tmp_path / "out" / finished_run.name, status="partial")
    before = digest(victim)
    plant_stale_lock(shared_tmp, victim, plan=True)
    p = run_cli("recover", "--local", "-o", str(tmp_path / "out"),
                env=env_without_private(TMPDIR=str(shared_tmp)))  # fmt: skip
    assert p.returncode == 0 and "holds nothing" in p.stdout, p.stdout + p.stderr
    assert digest(victim) == before


def test_a_foreign_lock_in_the_lock_dir_is_refused_saying_whose(tmp_path, monkeypatch):
    """Even in the user's own lock directory, a lock nobody owns is not read as a stale
    run to finish: acquire refuses it and names its owner."""
    locks = tmp_path / "locks"
    locks.mkdir()
    monkeypatch.setenv(private.LOCK_DIR_ENV, str(locks))
    plant = locks / "droidoom-lock"
    plant.mkdir()
    (plant / "owner").write_text("run_id=x\nhost=elsewhere\nhost_pid=1\ncreated=1\n")
    give_to_nobody(plant, plant / "owner")
    target = LocalTarget()
    try:
        with pytest.raises(PermanentTargetError) as e:
            devlock.acquire(target, "mine", str(tmp_path / "run"))
    finally:
        target.close()
    assert "nobody" in str(e.value) and str(plant) in str(e.value)
    assert leftovers.local_stale_owners() == []  # doctor / recover --local skip it, too


# ----------------------------------------------------- what recovery may write into


def records_in_workdir(run: Path, run_id: str, n: int, *, plan: bool = True) -> Path:
    """Records named for `run_id` in a workdir next to `run`, and (unless not `plan`)
    `run`'s own plan file: all recovery needs to label them as `run`'s."""
    work = run.parent / "work"
    work.mkdir(exist_ok=True)
    (work / f"records-{run_id}.bin").write_bytes(forged_records(n))
    if plan:
        (work / f"plan-{run.name}.txt").write_text(plan_text(run))
    return work / f"records-{run_id}.bin"


def test_recovery_never_rewrites_a_complete_run(tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path / finished_run.name)
    before = digest(run)
    rec = records_in_workdir(run, run.name, 4600)
    with pytest.raises(DataError, match="complete run"):
        recover_run(LocalTarget(workdir=str(rec.parent)), run, str(rec))
    assert digest(run) == before and rec.exists()  # nothing written, nothing deleted


def test_recovery_refuses_records_of_another_run(tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path / finished_run.name, status="partial")
    before = digest(run)
    rec = records_in_workdir(run, "some-other-run", 4600)
    with pytest.raises(DataError, match="does not belong"):
        recover_run(LocalTarget(workdir=str(rec.parent)), run, str(rec))
    assert digest(run) == before


def test_recovery_refuses_records_beyond_the_plan(tmp_path, finished_run):
    run = copy_run(finished_run, tmp_path / finished_run.name, status="partial")
    before = digest(run)
    rec = records_in_workdir(run, run.name, 10)
    data = bytearray(rec.read_bytes())
    data[16 + RECORD_DTYPE.fields["point"][1]] = 200  # point 200 of a 2-point plan
    rec.write_bytes(bytes(data))
    with pytest.raises(DataError, match="not this run's records"):
        recover_run(LocalTarget(workdir=str(rec.parent)), run, str(rec))
    assert digest(run) == before


def test_recovery_without_the_plan_file_uses_the_rebuilt_plan(tmp_path, finished_run):
    """The plan file is optional (the plan is rebuilt from run.json): a missing one is
    not a FileNotFoundError crash."""
    run = copy_run(finished_run, tmp_path / finished_run.name, status="partial")
    rec = records_in_workdir(run, run.name, 150, plan=False)
    r = recover_run(LocalTarget(workdir=str(rec.parent)), run, str(rec))
    assert r.writes == 150 and len(droidoom.load(run)) == 150


def test_recover_over_adb_leaves_a_complete_runs_records_alone(
    adb_peer, device_dir, tmp_path, finished_run
):
    """`recover -o OUT` meets records (forged or left by a failed cleanup) for a complete
    run: a note, nothing written, the other runs still recovered; the run named as
    RUN_DIR is a refusal, exit 2."""
    from adb_env import cli_env

    run = copy_run(finished_run, tmp_path / "out" / finished_run.name)
    before = digest(run)
    rec = Path(device_dir) / f"records-{run.name}.bin"
    rec.write_bytes(forged_records(4600))
    env = cli_env(adb_peer.server, device_dir)
    p = run_cli("recover", "--serial", adb_peer.serial, "-o", str(tmp_path / "out"), env=env)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert "complete run" in " ".join(p.stderr.split()) and "holds no records" in p.stdout
    p = run_cli("recover", "--serial", adb_peer.serial, str(run), env=env)
    assert p.returncode == 2 and "complete run" in " ".join(p.stderr.split()), p.stderr
    assert digest(run) == before and rec.exists()


# ------------------------------------------------------------ output paths (16.2)


def char_device(path: Path) -> Path:
    """A char device 1,3 (what /dev/null is) of our own, never /dev/null itself."""
    os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return path


def special(kind: str, path: Path) -> Path:
    if kind == "char device":
        return char_device(path)
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()
    return path


def still(kind: str, path: Path) -> bool:
    mode = os.lstat(path).st_mode
    return {"char device": stat.S_ISCHR, "fifo": stat.S_ISFIFO, "directory": stat.S_ISDIR,
            "socket": stat.S_ISSOCK}[kind](mode)  # fmt: skip


@pytest.mark.parametrize("kind", ["char device", "fifo", "directory", "socket"])
def test_report_html_refuses_a_path_that_is_not_a_regular_file(tmp_path, finished_run, kind):
    node = special(kind, tmp_path / "out.html")
    p = run_cli("report", str(finished_run), "--html", str(node), env={**os.environ,
                "COLUMNS": "300"})  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert kind.split()[0] in p.stderr and str(node) in " ".join(p.stderr.split())
    assert still(kind, node)  # not replaced by a file


@pytest.mark.parametrize("kind", ["char device", "fifo"])
def test_the_atomic_writer_refuses_special_files_too(tmp_path, kind):
    """store.atomic_write (run.json, samples, html, csv, json) checks at the write
    itself, not only when a command starts."""
    node = special(kind, tmp_path / "x")
    with pytest.raises(UsageError, match="not a regular file"):
        store.atomic_write(node, b"data")
    assert still(kind, node) and not [f for f in tmp_path.iterdir() if f.name != "x"]


def foreign_link(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """(a symlink `name` owned by nobody, the root-owned file it points at)."""
    victim = tmp_path / "precious"
    victim.write_text("root's file\n")
    link = tmp_path / name
    link.symlink_to(victim)
    give_to_nobody(link)
    return link, victim


def test_export_does_not_follow_a_symlink_another_user_planted(tmp_path, finished_run):
    link, victim = foreign_link(tmp_path, "out.pftrace")
    p = run_cli("export", str(finished_run), "--perfetto", str(link),
                env={**os.environ, "COLUMNS": "300"})  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "nobody" in p.stderr and "symlink" in p.stderr
    assert victim.read_text() == "root's file\n" and link.is_symlink()


def test_export_writes_through_the_users_own_symlink(tmp_path, finished_run):
    target = tmp_path / "real.pftrace"
    target.write_text("old")
    link = tmp_path / "out.pftrace"
    link.symlink_to(target)
    p = run_cli("export", str(finished_run), "--perfetto", str(link))
    assert p.returncode == 0, p.stderr
    assert link.is_symlink() and target.stat().st_size > 100  # the link stays, its file new


def test_cost_json_does_not_follow_a_symlink_another_user_planted(tmp_path):
    """cost --json: refused before the work (with a real trace and replay run, the old
    code followed the link)."""
    from droidoom.traces.synth import SynthSpec, generate

    data, _ = generate(SynthSpec(seed=3, duration_s=120))
    trace = tmp_path / "phone.pftrace"
    trace.write_bytes(data)
    p = run_cli("profile", "--local", "--scenario", f"replay:{trace}", "--compress", "0",
                "--population", "0,50", "--out", str(tmp_path / "runs"))  # fmt: skip
    assert p.returncode == 0, p.stderr
    (run,) = (tmp_path / "runs").iterdir()
    link, victim = foreign_link(tmp_path, "cost.json")
    p = run_cli("cost", str(trace), "--run", str(run), "--json", str(link),
                env={**os.environ, "COLUMNS": "300"})  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "nobody" in p.stderr and victim.read_text() == "root's file\n"
    own = tmp_path / "mine.json"
    p = run_cli("cost", str(trace), "--run", str(run), "--json", str(own))
    assert p.returncode == 0 and json.loads(own.read_text())["runs"], p.stderr


def test_report_figures_do_not_follow_a_symlink_planted_in_the_folder(tmp_path, finished_run):
    from droidoom.vocab import slug

    figs = tmp_path / "figs"
    figs.mkdir()
    device = store.read_run(finished_run).device
    link, victim = foreign_link(figs, f"scaling_{slug(device)}_reopen.png")
    p = run_cli("report", str(finished_run), "--figures", str(figs),
                env={**os.environ, "COLUMNS": "300"})  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    assert "nobody" in p.stderr and victim.read_text() == "root's file\n"


def test_output_target_follows_only_a_chain_of_own_links(tmp_path):
    mine = tmp_path / "mine.txt"
    mine.write_text("x")
    (tmp_path / "a").symlink_to(mine)
    assert store.output_target(tmp_path / "a") == mine
    link, _ = foreign_link(tmp_path, "b")  # mine -> nobody's link -> root's file
    (tmp_path / "c").symlink_to(link)
    with pytest.raises(UsageError, match="nobody"):
        store.output_target(tmp_path / "c")
    (tmp_path / "d").symlink_to(tmp_path / "nowhere")  # a dangling link: refused too
    with pytest.raises(UsageError, match="does not exist"):
        store.output_target(tmp_path / "d")
    someone = tmp_path / "theirs.txt"
    someone.write_text("y")
    give_to_nobody(someone)
    (tmp_path / "e").symlink_to(someone)  # my link, their file
    with pytest.raises(UsageError, match="nobody"):
        store.output_target(tmp_path / "e")
