"""run.json's one writer: every write of a run's record, and the status changes it allows.

A run's record goes running -> complete | partial | failed; a partial or failed run may
be written again (recovery adds the records a device kept, a farm adds why it stopped),
and a complete run only by the run that completed it (its last notices). Everything else
is refused before anything is written: recovery never rewrites a finished run, and no
stale lock or second process turns a complete run partial. Each write is atomic and its
field types are checked first (the same check `store.read_run` makes), so a run.json on
disk is always one that `droidoom.load()` reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import store
from ..errors import DataError
from ..vocab import RunStatus

#: The statuses a record may go to from each status (None: no run.json yet).
TRANSITIONS: dict[RunStatus | None, frozenset[RunStatus]] = {
    None: frozenset(RunStatus),
    RunStatus.RUNNING: frozenset(RunStatus),
    RunStatus.PARTIAL: frozenset({RunStatus.PARTIAL}),
    RunStatus.FAILED: frozenset({RunStatus.FAILED, RunStatus.PARTIAL}),
    RunStatus.COMPLETE: frozenset({RunStatus.COMPLETE}),
}


def path_of(run_dir: Path) -> Path:
    """The run.json of `run_dir`."""
    return Path(run_dir) / store.RUN_JSON


def _on_disk(run_dir: Path) -> dict[str, Any]:
    """run.json as it is now ({} when there is none, or it does not parse)."""
    if not path_of(run_dir).exists():
        return {}
    try:
        return store.read_run(run_dir).meta
    except DataError:
        return {}


def _status(meta: Mapping[str, Any]) -> RunStatus | None:
    try:
        return RunStatus(str(meta.get("status")))
    except ValueError:
        return None


def write(run_dir: Path, meta: Mapping[str, Any], *, run_id: str | None = None) -> None:
    """Write `meta` as `run_dir`'s run.json, if the status change is allowed.

    `run_id`: the run writing (default: `meta`'s); a complete run.json is rewritten only by
    its own run. DataError, with nothing written, for a status change TRANSITIONS does not
    allow or a field of the wrong type."""
    status = RunStatus(meta["status"])
    existing = _on_disk(run_dir)  # read once: the status change and whose run it is
    before = _status(existing)
    if status not in TRANSITIONS[before]:
        raise DataError(
            f"{path_of(run_dir)} says {before}; droidoom does not make a {before} run "
            f"{status} (nothing was written)"
        )
    if before is RunStatus.COMPLETE:
        on_disk = existing.get("run_id")
        if on_disk != (run_id or meta.get("run_id")):
            raise DataError(
                f"{path_of(run_dir)} is complete run {on_disk}: only that run may update it "
                "(nothing was written)"
            )
    doc = json.loads(json.dumps({"format": store.FORMAT, **meta}, default=str))  # as read
    store.check_run_fields(path_of(run_dir), doc)
    store.write_json(path_of(run_dir), doc)


def mark_partial(run_dir: Path, reason: str) -> bool:
    """A run still saying running (its process died) becomes partial, saying why; True if
    it was changed. Any other status is left as it is."""
    info = store.read_run(run_dir)
    if info.meta.get("status") != RunStatus.RUNNING:
        return False
    write(run_dir, {**info.meta, "status": RunStatus.PARTIAL, "reason": reason})
    return True
