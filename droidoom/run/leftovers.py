"""What a killed run left behind, and finishing it.

SIGKILL (or a host crash) runs no cleanup: the run directory says "running" with no
samples, the records file stays in the target's workdir, a tracefs instance may stay
armed, and the device lock stays held. The stale lock names the dead run (devlock.Owner),
so the next run on the device (or `droidoom recover --local`, or `doctor`) can find
all of it: records are pulled into the run directory (recover.recover_run), the
instance is removed, the dead run's temporary workdir on this host is deleted.

On this host the lock and workdirs live in the user's private directory (private.py); a
lock, workdir, records or plan file that is not the user's (or root's) is refused and
left alone, and the run a lock names is finished only if its run.json has that run id
and does not say complete (recover.check_recoverable).
"""

from __future__ import annotations

import shlex
import shutil
import time
from pathlib import Path

from .. import store
from ..capture.ftrace import TRACEFS_ROOTS, instance_name
from ..errors import DroidoomError
from ..private import WORK_PREFIX, is_workdir, private_dir, trusted
from ..protocol import key_values
from ..targets.base import Target
from ..targets.local import LocalTarget
from . import record
from .devlock import Owner, acquire, is_stale
from .recover import check_recoverable, find_run_dirs, pending, recover_run


def remove_instance(target: Target, run_id: str) -> bool:
    """Stop and remove `run_id`'s tracefs instance if it exists (root only)."""
    if not target.facts().root:
        return False
    name = instance_name(run_id)
    lines = []
    for root in TRACEFS_ROOTS:
        i = shlex.quote(f"{root}/instances/{name}")
        lines.append(
            f"if [ -d {i} ]; then echo 0 > {i}/tracing_on; echo 0 > {i}/events/enable; "
            f"rmdir {i} && echo removed; fi"
        )
    try:
        res = target.sh("\n".join(lines), timeout=60, root=True)
    except DroidoomError:
        return False
    return "removed" in res.stdout


def finish(target: Target, owner: Owner) -> list[str]:
    """Finish what the dead run `owner` left on `target`; return one line per action."""
    done = []
    if owner.run_id and remove_instance(target, owner.run_id):
        done.append(f"removed the tracefs instance {instance_name(owner.run_id)} it left armed")
    run_dir = Path(owner.run_dir) if owner.run_dir else None
    remote = f"{owner.workdir}/records-{owner.run_id}.bin" if owner.workdir else None
    local = not target.is_remote  # then its workdir is a directory of this user's
    if local and remote and (why := _untrusted_local(owner.workdir, remote, owner.run_id)):
        return done + [f"left {owner.workdir} alone: {why}"]
    if run_dir is not None and (run_dir / store.RUN_JSON).is_file() and remote:
        try:
            check_recoverable(run_dir, owner.run_id, remote)  # before anything is written
        except DroidoomError as e:
            return done + [f"refused to finish it: {e}"]  # its workdir is kept, too
        try:
            record.mark_partial(run_dir, "the droidoom process was killed (SIGKILL or a crash)")
            if target.sh(f"[ -f {shlex.quote(remote)} ]", timeout=30).ok:
                r = recover_run(target, run_dir, remote)
                done.append(f"recovered {r.writes} writes it had recorded into {r.run_dir}")
            else:
                done.append(f"marked {run_dir} partial (no records were left)")
        except DroidoomError as e:
            done.append(f"could not recover its records ({e}); `droidoom recover` retries")
    if local:
        _remove_local_workdir(owner.workdir)
    return done


def _untrusted_local(workdir: str, records: str, run_id: str) -> str | None:
    """Why a dead local run's workdir or files are not to be trusted, or None: it must
    be a workdir in the user's private directory, and it and its files the user's."""
    if not is_workdir(workdir):
        return f"{workdir} is not a work directory in {private_dir()}: not trusted"
    plan = f"{workdir}/plan-{run_id}.txt"
    for path, what in ((workdir, "the workdir"), (records, "records"), (plan, "the plan")):
        if why := trusted(path, what):
            return why
    return None


def _remove_local_workdir(workdir: str) -> None:
    """Delete a dead run's own workdir (in the private directory, the user's), nothing
    else."""
    if workdir and is_workdir(workdir) and trusted(workdir, "workdir") is None:
        shutil.rmtree(workdir, ignore_errors=True)


def _local_owners() -> list[tuple[Owner, bool]]:
    """(owner, stale) of every lock in this host's lock directory."""
    owners = []
    for lock in private_dir().glob("droidoom-lock*"):
        if not lock.is_dir() or trusted(lock, "lock") or trusted(lock / "owner", "lock"):
            continue  # not the user's: acquire() refuses it, saying whose it is
        try:
            kv = key_values((lock / "owner").read_text())
            pid = (lock / "pid").read_text().strip() if (lock / "pid").exists() else ""
        except OSError:
            continue
        kv["device_pid"] = pid
        kv["device_alive"] = "1" if pid.isdigit() and Path(f"/proc/{pid}").is_dir() else "0"
        owner = Owner.parse(kv)
        owners.append((owner, is_stale(owner, kv)))
    return owners


def local_stale_owners() -> list[Owner]:
    """Owners of stale local locks (their droidoom process is gone)."""
    return [o for o, stale in _local_owners() if stale]


def local_records(quiet_for: float = 0.0) -> dict[str, Path]:
    """{run_id: records file} left in this user's workdirs (private directory): not a
    live run's (its lock names its workdir), untouched for `quiet_for` seconds, and only
    files the user (or root) owns."""
    live = {o.workdir for o, stale in _local_owners() if not stale}
    found = {}
    for f in private_dir().glob(f"{WORK_PREFIX}*/records-*.bin"):
        if trusted(f.parent, "workdir") or trusted(f, "records"):
            continue
        try:
            idle = time.time() - f.stat().st_mtime
        except OSError:
            continue
        if str(f.parent) not in live and idle >= quiet_for:
            found[f.name[len("records-") : -len(".bin")]] = f
    return found


def finish_local(out: Path, run_dir: Path | None = None) -> list[str]:
    """`droidoom recover --local`: finish this host's stale runs, then pull records left
    in temp workdirs into their run dirs (under `out`, or `run_dir`); one line each."""
    lines = []
    for owner in local_stale_owners():
        target = LocalTarget()
        try:
            # Taking the lock over proves the run is dead and keeps new runs out meanwhile.
            lock = acquire(target, f"recover-{owner.run_id}", owner.run_dir)
        except DroidoomError as e:
            lines.append(str(e))
            continue
        try:
            lines += [f"{owner.run_id}: {t}" for t in finish(target, owner)]
        finally:
            lock.release()
            target.close()
    held = local_records()
    if run_dir is not None:
        dirs = {store.read_run(run_dir).run_id: Path(run_dir)}
    else:
        dirs = find_run_dirs(out, held)
    for run_id, path in dirs.items():
        if run_id not in held:
            continue
        workdir = str(held[run_id].parent)
        if why := _untrusted_local(workdir, str(held[run_id]), run_id):
            lines.append(f"left {workdir} alone: {why}")
            continue
        target = LocalTarget(workdir=workdir)
        try:
            r = recover_run(target, path, str(held[run_id]))
        except DroidoomError as e:  # one refused run does not cost the others
            lines.append(f"{run_id}: not recovered: {e}")
            continue
        lines.append(f"recovered {r.writes} writes into {r.run_dir} (had {r.previous})")
        _remove_local_workdir(workdir)
    return lines


def summary(target: Target) -> list[str]:
    """What `doctor` reports: a stale lock and records left by cut-short runs."""
    lines = []
    if not target.is_remote:
        for owner in local_stale_owners():
            lines.append(f"{owner.describe()} was killed: its lock is stale")
        for run_id in local_records(quiet_for=30.0):
            lines.append(f"records of run {run_id} are left in a temp dir")
    else:
        try:
            for run_id in pending(target):
                lines.append(f"the device holds records of cut-short run {run_id}")
        except DroidoomError:
            pass
    return lines
