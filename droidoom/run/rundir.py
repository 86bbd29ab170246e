"""A run directory from its opening to a failure: a unique name, the device lock, run.json.

A run directory is named by its run id; while it is open the device lock says which run
owns the device, so another host (or a killed run's successor) can tell.
"""

from __future__ import annotations

import datetime as dt
import secrets
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import store, vocab
from ..errors import UsageError
from ..targets.base import Target
from . import devlock, leftovers, record


def make_run_id(device: str, now: dt.datetime | None = None) -> str:
    now = now or dt.datetime.now(dt.UTC)
    safe = vocab.slug(device)
    # The random part keeps runs started in the same second apart on one host (run ids
    # also name tracefs instances and device files, shared by every run there).
    return f"{now:%Y%m%dT%H%M%SZ}-{safe}-{secrets.token_hex(2)}"


def writable_dir(out_dir: Path) -> Path:
    """`out_dir`, created; UsageError when this user cannot write files there."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        tempfile.TemporaryFile(dir=out_dir).close()
    except OSError as e:
        raise UsageError(f"cannot write to output directory {out_dir}: {e.strerror}") from None
    return out_dir


@dataclass(frozen=True)
class RunDir:
    """An open run: its directory, the device lock it holds and run.json's content."""

    path: Path
    lock: devlock.DeviceLock
    meta: dict[str, Any]  # run.json, updated in place as the run goes

    @property
    def run_id(self) -> str:
        return self.path.name

    def start(self, meta: dict[str, Any]) -> None:
        """Write the first run.json; on failure release the lock (bad disk: UsageError)."""
        self.meta.update(meta)
        try:
            record.write(self.path, self.meta)
        except BaseException as e:
            self.lock.release()
            if isinstance(e, OSError):
                path = self.path / store.RUN_JSON
                raise UsageError(f"cannot write {path}: {e.strerror}") from None
            raise

    def fail(self, e: BaseException) -> None:
        """An error that is not the target's: run.json says failed, an empty run directory
        goes, the lock is released."""
        self.meta.update(status=vocab.RunStatus.FAILED, finished=vocab.now(), error=str(e))
        record.write(self.path, self.meta)
        if not (self.path / store.SAMPLES).exists():
            for f in self.path.iterdir():
                f.unlink()
            self.path.rmdir()
        self.lock.release()


def open_run(target: Target, out_dir: Path, run_id: str) -> RunDir:
    """A new directory `out_dir/run_id` (`-2`, `-3`... if taken) with the device locked.

    A stale lock (its run was killed) is taken over; what that run left is finished by
    `finish_stale`, a step of its own: opening a run changes nothing else.
    """
    run_dir = out_dir / run_id
    suffix = 1
    while run_dir.exists():
        suffix += 1
        run_dir = out_dir / f"{run_id}-{suffix}"
    lock = devlock.acquire(target, run_dir.name, str(run_dir.resolve()))
    try:
        run_dir.mkdir()
    except BaseException:
        lock.release()
        raise
    return RunDir(run_dir, lock, {})


def finish_stale(target: Target, run: RunDir, notice: Callable[[str], None]) -> None:
    """If `run` took over a stale lock, finish what the killed run left (its records
    recovered into its run directory, its tracefs instance removed), saying each step."""
    stale = run.lock.stale
    if stale is None:
        return
    notice(f"the device lock of {stale.describe()} was stale (killed?): taken over")
    try:
        for line in leftovers.finish(target, stale):
            notice(f"that run: {line}")
    except BaseException:
        run.lock.release()
        run.path.rmdir()
        raise
