"""The end of a run: pull the records, save the run (a full disk keeps what fits) and
clean up after it (failures there are warnings: the measurement is already safe)."""

from __future__ import annotations

import errno
import shlex
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .. import signals, store
from ..errors import DataError, TargetError
from ..vocab import RunStatus
from . import record
from .helper_io import records_to_frame

if TYPE_CHECKING:
    from ..scenario import Plan
    from ..targets.base import Target
    from .devlock import DeviceLock


def describe(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return signals.describe(e)
    if isinstance(e, OSError):
        return f"{e.filename or 'the run directory'}: {e.strerror or e}"
    return str(e) or "interrupted"


def in_temp_dir(e: OSError, tmp: Path) -> OSError:
    """`e` (a write to a temp file that names no file, e.g. ENOSPC) as an error that
    names the temp directory and says what to do."""
    if e.filename is not None:
        return e
    return OSError(
        e.errno,
        f"{e.strerror or e} (the temp directory: free space there or set TMPDIR to another)",
        str(tmp),
    )


def save(
    run_dir: Path, samples: pd.DataFrame, meta: dict[str, Any], recover: str | None
) -> int:
    """Write samples.parquet and run.json; return the rows kept.

    On a full disk (ENOSPC) keep the longest prefix of samples that leaves room for
    run.json, say so in it, and point to `recover` (the target's Target.recover_hint:
    it still has every record; None where they do not outlive the run).
    """
    n, full = len(samples), None
    while True:
        try:
            if n:
                store.write_table(run_dir / store.SAMPLES, samples.iloc[:n])
            record.write(run_dir, meta)
            return n
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            if full is None:
                full = e
                # Only a complete run deletes its device files: this one keeps them.
                meta["status"] = RunStatus.PARTIAL
            elif n == 0:
                raise DataError(
                    f"disk full (ENOSPC): cannot even write {run_dir / store.RUN_JSON}; "
                    f"free space, then `{recover or 'droidoom recover'}` fetches the records"
                ) from None
            n //= 2
            if n == 0:
                (run_dir / store.SAMPLES).unlink(missing_ok=True)
            meta.update(
                writes_recorded=n,
                reason=(
                    f"disk full (ENOSPC) writing {run_dir}: kept {n} of {len(samples)} "
                    + (f"writes. Free space, then `{recover}` fetches them all" if recover
                       else "writes; the rest ended with the target")
                ),
            )


def cleanup(
    target: Target, lock: DeviceLock, status: str, remote: Sequence[str], link_lost: bool
) -> tuple[dict[str, Any], list[str]]:
    """After the run: sample device activity, remove the device files of a complete run,
    release the lock. A dropped link here costs nothing measured: warnings, not errors."""
    if link_lost:
        return {}, [lock.abandon()]
    warnings = []
    after = lock.activity()
    if status == RunStatus.COMPLETE:
        try:
            target.sh("rm -f " + " ".join(map(shlex.quote, remote)), timeout=30)
        except TargetError as e:
            warnings.append(f"could not remove {', '.join(remote)} from the device ({e})")
    w = lock.release()
    if w:
        warnings.append(w)
    return after, warnings


def pull_records(
    target: Target, remote: str, plan: Plan, run_id: str, device: str
) -> tuple[pd.DataFrame | None, str]:
    """(samples, "") or (None, why). Read in place where the host can (this host), else
    pulled into a temp dir, not the run dir: a full output disk must not cost the
    records (they are written in compressed form later)."""
    try:
        data = target.read_bytes(remote)
        if data is None:
            with tempfile.TemporaryDirectory(prefix="droidoom-pull-") as tmp:
                local = Path(tmp) / "records.bin"
                target.pull(remote, local)
                data = local.read_bytes()
        return records_to_frame(data, plan, run_id, device), ""
    except TargetError as e:
        return None, str(e)
    except OSError as e:
        return None, describe(in_temp_dir(e, Path(tempfile.gettempdir())))
