"""A `--kernel` run's records as they reached the host, and a dead run finished from them.

A QEMU guest's records file lives in its RAM and dies with it, so the guest streams it
to the host as the helper writes it (droidoom/lab/follow.py) and the runner keeps the
copy in the run directory (`STREAMED`), with an exclusive flock held for the whole run.
When the guest ends early the run is saved from that copy. When droidoom itself is
killed (SIGKILL, a crash), QEMU dies with it (PR_SET_PDEATHSIG) and run.json still says
"running": the next command that meets the run (report, load, recover, a profile into
the same folder) sees that nobody holds the flock and marks it partial with the writes
that reached the host, saying why (`settle`).
"""

from __future__ import annotations

import fcntl
import os
import warnings
from pathlib import Path

from .. import store
from ..errors import DataError
from ..vocab import RunStatus
from . import record

#: The host's copy of a VM run's records file, in its run directory.
STREAMED = "records-streamed.bin"


class RunSettled(UserWarning):
    """A run whose droidoom process died was marked partial (the message says why)."""


class LiveRecords:
    """The run directory's copy of the records file, written at the offsets the guest
    sends; its flock says the run is alive."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / STREAMED
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a fresh file: never held

    def write_at(self, offset: int, data: bytes) -> None:
        """Write `data` at `offset` (a chunk sent again as it grew overwrites itself)."""
        os.pwrite(self._fd, data, offset)

    def read(self) -> bytes:
        """What reached the host so far."""
        return self.path.read_bytes() if self.path.exists() else b""

    def close(self, remove: bool) -> None:
        """Release the flock; `remove` the copy (the run's samples hold it all)."""
        if self._fd < 0:
            return
        if remove:
            self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = -1


def is_vm_run(meta: dict[str, object]) -> bool:
    """A run made in a QEMU guest (its records died with it; a copy streamed home)."""
    from ..targets.select import recorded_in_vm

    return recorded_in_vm(meta)


def _dead_lock(run_dir: Path) -> int | None:
    """An fd holding the flock of `run_dir`'s copy (its run is dead), -1 if there is no
    copy (the run died before its helper started, or predates streaming), None if a live
    process holds it."""
    try:
        fd = os.open(run_dir / STREAMED, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return -1
    except OSError:
        return None  # not ours to judge (a symlink, no permission)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def settle(info: store.RunInfo) -> tuple[store.RunInfo, str] | None:
    """If `info` is a VM run whose droidoom process died while it was running: its
    samples from the copy that reached the host, run.json partial with why; return the
    updated run and a line saying so. None for any other run (a live one included)."""
    meta = info.meta
    if meta.get("status") != RunStatus.RUNNING or not is_vm_run(meta):
        return None
    fd = _dead_lock(info.path)
    if fd is None:
        return None
    try:
        return _finish(info, b"" if fd < 0 else _read_all(fd))
    finally:
        if fd >= 0:
            os.close(fd)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def _finish(info: store.RunInfo, data: bytes) -> tuple[store.RunInfo, str]:
    """Write what `data` holds into the run (never fewer samples than it has) and mark
    it partial; the copy goes once its records are in samples.parquet."""
    from .helper_io import records_to_frame
    from .recover import rebuild_plan

    meta, path, n, why = dict(info.meta), info.path, 0, ""
    samples_path = path / store.SAMPLES
    had = _rows(samples_path)  # killed while saving: the pulled samples may be there
    if len(data) > 16:  # more than the records file's header
        try:
            plan = rebuild_plan(meta, path)
            samples = records_to_frame(data, plan, info.run_id, str(meta.get("device", "")))
            n = len(samples)
            if n > had:
                store.write_table(samples_path, samples)
        except DataError as e:
            why = f" but could not be labelled ({e}); {path / STREAMED} is kept"
    n = max(n, had)
    reason = (f"the VM died with the run (its droidoom process was killed: SIGKILL or a "
              f"crash); {n} writes reached the host{why}")  # fmt: skip
    meta.update(status=RunStatus.PARTIAL, reason=reason, writes_recorded=n)
    record.write(path, meta)
    if not why:
        (path / STREAMED).unlink(missing_ok=True)
    return store.RunInfo(path, meta), f"{path}: {reason}; marked partial"


def _rows(samples: Path) -> int:
    """Rows in samples.parquet (0 if absent or unreadable)."""
    import pyarrow.parquet as pq

    try:
        return int(pq.read_metadata(samples).num_rows) if samples.exists() else 0
    except (OSError, ValueError):
        return 0


def settle_all(runs: list[store.RunInfo]) -> list[store.RunInfo]:
    """`runs` with each dead VM run settled (a warning line for each)."""
    out = []
    for r in runs:
        try:
            done = settle(r)
        except OSError as e:  # e.g. a read-only copy of the folder: said, not fatal
            warnings.warn(f"{r.path}: its VM run died, but it could not be marked partial "
                          f"({e.strerror})", RunSettled, stacklevel=3)  # fmt: skip
            done = None
        if done is not None:
            warnings.warn(done[1], RunSettled, stacklevel=3)
            r = done[0]
        out.append(r)
    return out


def count_records(data: bytes) -> int:
    """Records in a (possibly cut) records file's bytes; 0 without a whole header."""
    from ..protocol import decode_records

    try:
        return len(decode_records(data)) if len(data) >= 16 else 0
    except DataError:
        return 0


def settle_folder(out_dir: Path) -> list[str]:
    """Settle the dead VM runs directly under `out_dir` (a profile writing there meets
    them); one line each."""
    lines = []
    for f in sorted(Path(out_dir).glob(f"*/{store.RUN_JSON}")):
        try:
            if f'"{RunStatus.RUNNING}"' not in f.read_text(errors="replace"):
                continue  # cheap: most runs in a folder are long finished
            info = store.read_run(f.parent)
            done = settle(info)
        except (DataError, OSError):
            continue  # not this function's to report: `report` names a damaged run
        if done is not None:
            lines.append(done[1])
    return lines
