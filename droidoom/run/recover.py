"""`droidoom recover`: bring home the records a device kept after a run was cut short.

When a device drops mid-run the helper dies with its adb session, but its records file
(`<workdir>/records-<run_id>.bin`, flushed at every progress tick) stays on the device
and the host is left with a partial run without samples. Once the device is back, this
pulls the file and labels it: the plan is rebuilt from run.json (spec + adj_min) with
scenario.build_plan, which is deterministic, and checked against the plan file the
device also kept.
"""

from __future__ import annotations

import datetime as dt
import posixpath
import re
import shlex
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .. import store
from ..errors import DataError, PermanentTargetError
from ..protocol import render_plan
from ..scenario import Plan
from ..spec import ProfileSpec
from ..targets.base import Target
from ..vocab import RunStatus
from . import record
from .helper_io import records_to_frame
from .plans import build_plan

_RECORDS = re.compile(r"records-(?P<run_id>.+)\.bin$")


@dataclass(frozen=True)
class Recovered:
    """Outcome of recovering one run."""

    run_dir: Path
    remote: str  # records file on the device
    writes: int  # samples now in the run
    previous: int  # samples the run had before
    removed: bool  # device files deleted after a verified write


def pending(target: Target) -> dict[str, str]:
    """{run_id: records path} of every records file left on the device."""
    out = {}
    for path in target.find_files("records-*.bin"):
        m = _RECORDS.search(posixpath.basename(path))
        if m:
            out[m["run_id"]] = path
    return out


def recover_run(
    target: Target, run_dir: Path, remote: str | None = None, *, keep: bool = False
) -> Recovered:
    """Pull `run_dir`'s records from `target`, rebuild its samples, update run.json.

    `remote` defaults to the records file named after the run in any workdir. Device
    files are removed once the run is written, unless `keep`.
    """
    info = store.read_run(run_dir)
    meta = info.meta
    run_id = meta.get("run_id", info.path.name)
    if remote is None:
        remote = pending(target).get(run_id) or _in_helper_dir(target, meta, run_id)
    if remote is None:
        raise PermanentTargetError(
            f"{target.name} holds no records-{run_id}.bin (already recovered, cleaned, "
            "or the run was on another device)"
        )
    check_recoverable(run_dir, run_id, remote)
    if not target.is_remote and meta.get("device") not in (None, target.name):
        raise DataError(
            f"{run_dir} was recorded on {meta['device']}, not on {target.name}: its records "
            f"are not here; {remote} was left as it is"
        )
    plan = rebuild_plan(meta, run_dir)
    remote_plan = posixpath.join(posixpath.dirname(remote), f"plan-{run_id}.txt")
    samples = _pull_records(target, remote, remote_plan, plan, run_dir, run_id, meta["device"])
    previous = int(meta.get("writes_recorded") or 0)
    samples_path = info.path / store.SAMPLES
    if samples_path.exists() and len(samples) <= previous:  # e.g. Ctrl-C: pulled already
        if not keep:
            _remove(target, remote, remote_plan)
        return Recovered(info.path, remote, previous, previous, not keep)
    store.write_table(samples_path, samples)
    if meta.get("status") in (RunStatus.RUNNING, RunStatus.FAILED):
        meta["status"] = RunStatus.PARTIAL
    meta.update(
        writes_recorded=len(samples),
        recovered={
            "from": f"{target.name}:{remote}",
            "at": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"),
            "writes": len(samples),
            "previous_writes": previous,
        },
    )
    meta.setdefault("reason", "the run ended early")
    record.write(info.path, meta)
    if not keep:
        _remove(target, remote, remote_plan)
    return Recovered(info.path, remote, len(samples), previous, not keep)


def check_recoverable(run_dir: Path, run_id: str, remote: str) -> None:
    """DataError, before anything is written, unless records `remote` may go into
    `run_dir`: its run.json must not say complete (a complete run is never rewritten)
    and must be run `run_id`, which `remote` must be named after (records-<run_id>.bin).
    Records that name another run, or a finished one, are left where they are."""
    meta = store.read_run(run_dir).meta
    if meta.get("status") == RunStatus.COMPLETE:
        raise DataError(
            f"{run_dir} is a complete run: recovery never rewrites one; {remote} was left "
            "as it is (remove it if it is not from a cut-short run)"
        )
    named = _RECORDS.search(posixpath.basename(remote))
    theirs = {meta.get("run_id", Path(run_dir).name), run_id, named["run_id"] if named else ""}
    if len(theirs) != 1:
        raise DataError(
            f"{remote} (records of run {named['run_id'] if named else '?'}, for run "
            f"{run_id}) does not belong to {run_dir} (run {meta.get('run_id')}): nothing "
            "was written"
        )


def rebuild_plan(meta: dict[str, Any], run_dir: Path) -> Plan:
    """The run's plan, rebuilt from its spec and adj_min (build_plan is deterministic)."""
    try:
        spec = ProfileSpec.from_dict(meta["spec"])
        return build_plan(spec, int(meta["adj_min"]))
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(
            f"{run_dir}/run.json lacks the spec or adj_min to rebuild the plan: {e}"
        ) from None


def _pull_records(
    target: Target, remote: str, remote_plan: str, plan: Plan, run_dir: Path, run_id: str,
    device: str,
) -> pd.DataFrame:
    """The samples in the device's records file, labelled with `plan` once the plan file
    the device kept (if any) is checked to be the same."""
    with tempfile.TemporaryDirectory(prefix="droidoom-recover-") as tmp:
        local_rec, plan_file = Path(tmp) / "records.bin", Path(tmp) / "plan.txt"
        local_plan: Path | None = plan_file
        target.pull(remote, local_rec)
        try:
            target.pull(remote_plan, plan_file)
        except PermanentTargetError:
            local_plan = None  # the records alone suffice: the plan is rebuilt anyway
        if local_plan is not None and local_plan.read_text() != render_plan(
            plan.targets, plan.points, plan.writer, plan.measure
        ):
            raise DataError(
                f"the plan on the device ({remote_plan}) differs from the one rebuilt from "
                f"{run_dir}/run.json; not labelling records with a plan that may be wrong"
            )
        data = local_rec.read_bytes()
    return records_to_frame(data, plan, run_id, device)


def _in_helper_dir(target: Target, meta: dict[str, Any], run_id: str) -> str | None:
    """The records path next to the run's helper (the run may have used another
    workdir than this target's, e.g. via DROIDOOM_DEVICE_WORKDIR), if it exists."""
    helper = (meta.get("helper") or {}).get("path")
    if not helper:
        return None
    path = f"{posixpath.dirname(helper)}/records-{run_id}.bin"
    return path if target.sh(f"[ -f {shlex.quote(path)} ]", timeout=30).ok else None


def _remove(target: Target, *paths: str) -> None:
    target.sh("rm -f " + " ".join(shlex.quote(p) for p in paths), timeout=30)


def find_run_dirs(out: Path, run_ids: Iterable[str]) -> dict[str, Path]:
    """{run_id: run dir} for the given ids among the runs under `out` (recursive)."""
    wanted = set(run_ids)
    found: dict[str, Path] = {}
    if not Path(out).is_dir():
        return found
    for r in store.find_runs(out) if any(Path(out).glob(f"**/{store.RUN_JSON}")) else []:
        if r.run_id in wanted:
            found[r.run_id] = r.path
    return found


def partial_runs_of(out: Path, serial: str) -> dict[str, Path]:
    """{run_id: run dir} of the partial runs under `out` taken on adb serial `serial`
    (farm runs name the device by label and keep the serial in meta["farm"])."""
    found: dict[str, Path] = {}
    if not Path(out).is_dir() or not any(Path(out).glob(f"**/{store.RUN_JSON}")):
        return found
    for r in store.find_runs(out):
        farm = r.meta.get("farm") or {}
        if r.status == RunStatus.PARTIAL and serial in (farm.get("serial"), r.device):
            found[r.run_id] = r.path
    return found
