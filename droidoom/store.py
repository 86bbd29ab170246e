"""Run directories: atomic writes of run.json / samples.parquet, and `load()`.

A run is a directory::

    <run_id>/run.json          spec, target facts, helper, calibration, status
    <run_id>/samples.parquet   one row per timed write (schema.SAMPLE_COLUMNS)
    <run_id>/<capture>.parquet extra tables from capture sources

Every file is written to a temp name in the same directory and renamed into place, so
a reader never sees half a file; an interrupted run is left with status "partial".
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.api.types import union_categoricals

from . import schema
from .errors import DataError, UsageError
from .fingerprint import fingerprint
from .private import user_name
from .vocab import RunStatus

FORMAT = 1
RUN_JSON = "run.json"
SAMPLES = "samples.parquet"
#: The column `load` adds: which runs measured alike (equal values may be pooled).
FINGERPRINT = "fingerprint"


def _umask() -> int:
    """The process umask, read without changing it (Linux /proc), else via os.umask."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    old = os.umask(0o022)
    os.umask(old)
    return old


_KINDS = (
    (stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"),
)  # fmt: skip


def output_target(path: Path | str, what: str = "output") -> Path:
    """The file writing `path` really replaces; UsageError if it must not be written.

    The atomic rename would replace whatever `path` is: a device node (`/dev/null` as
    root), a fifo, or a symlink another user planted in a shared folder. So an existing
    `path` must be a regular file; a symlink is followed (the link stays, its target is
    replaced) only while every link on the way and the final file are the invoking
    user's own. A `path` that does not exist yet is returned as it is.
    """
    start = path = Path(path)
    me, hops = os.geteuid(), 0
    link = f"{what} {start}: a symlink"
    advice = "droidoom writes through a link only when every link and the file are yours"
    while True:
        try:
            st = os.lstat(path)
        except OSError as e:
            if not isinstance(e, (FileNotFoundError, NotADirectoryError)):
                raise UsageError(f"{what} {path}: cannot check it ({e.strerror})") from None
            if hops:
                raise UsageError(
                    f"{link} to {path}, which does not exist; remove the link or choose "
                    "another path"
                ) from None
            return path
        if not stat.S_ISLNK(st.st_mode):
            break
        if hops >= 40:
            raise UsageError(f"{link} leading through 40 more: choose another path")
        if st.st_uid != me:
            via = "" if path == start else f" via {path}"
            raise UsageError(
                f"{link}{via} owned by {user_name(st.st_uid)}, not by you ({user_name(me)}); "
                f"{advice}: remove it or choose another path"
            )
        # no normpath: "dir/../x" through a symlinked dir is the kernel's to resolve
        path, hops = Path(os.path.join(path.parent, os.readlink(path))), hops + 1
    for test, kind in _KINDS:
        if test(st.st_mode):
            via = f" (the symlink {start} leads there)" if hops else ""
            raise UsageError(
                f"{what} {path}{via}: it is {kind}, not a regular file, and writing would "
                "replace it: choose a file path"
            )
    if hops and st.st_uid != me:
        raise UsageError(
            f"{link} to {path}, which is owned by {user_name(st.st_uid)}, not by you "
            f"({user_name(me)}); {advice}: remove the link or choose another path"
        )
    return path


@contextmanager
def atomic_open(path: Path | str, what: str = "output") -> Iterator[BinaryIO]:
    """A binary file that replaces `path` (see `output_target`) by an atomic rename
    once the block ends without error; nothing is left behind if it raises.

    The file gets the mode a plain open() would give it (0666 less the umask), not
    mkstemp's private 0600: results are meant to be shared.
    """
    dest = output_target(path, what)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path | str, data: bytes, what: str = "output") -> None:
    """Write `data` to `path` via a temp file + rename (atomic on POSIX); `path` is
    checked by `output_target` first (no device node, no foreign symlink)."""
    with atomic_open(path, what) as f:
        f.write(data)


def write_json(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_table(path: Path, df: pd.DataFrame) -> None:
    """DataFrame -> parquet, atomically."""
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pandas(df, preserve_index=False), sink, compression="zstd")
    atomic_write(path, sink.getvalue().to_pybytes())


@dataclass(frozen=True)
class RunInfo:
    """A run directory and its parsed run.json."""

    path: Path
    meta: dict[str, Any]

    @property
    def run_id(self) -> str:
        run_id: str = self.meta.get("run_id", self.path.name)
        return run_id

    @property
    def status(self) -> str:
        # A run whose host died mid-way still says "running": it is partial.
        s: str = self.meta.get("status", RunStatus.PARTIAL)
        return RunStatus.PARTIAL if s == RunStatus.RUNNING else s

    @property
    def device(self) -> str:
        device: str = self.meta.get("device", "")
        return device


_NUMBER = (int, float)
#: JSON types of the run.json fields droidoom reads (dotted paths; `x[]` is each item of
#: list `x`). Absent or null fields are fine (older runs lack some); any other type is a
#: damaged or hand-edited file and is refused by `read_run` before it can become an
#: AttributeError deep in a report.
RUN_FIELDS: dict[str, type | tuple[type, ...]] = {
    **dict.fromkeys(["run_id", "device", "status", "started", "finished", "reason",
                     "farm_id"], str),
    **dict.fromkeys(["adj_min", "helper_exit", "writes_planned", "writes_recorded",
                     "writes_on_device", "farm_attempt"], int),
    **dict.fromkeys(["spec", "target", "calibration", "captures", "helper", "helper_facts",
                     "device_activity", "writer", "vm", "replay", "farm"], dict),
    **dict.fromkeys(["points", "notices", "targets"], list),
    **dict.fromkeys(["points[]", "targets[]"], dict),
    **dict.fromkeys(["spec.kinds", "spec.modes", "spec.populations", "spec.levels"], list),
    **dict.fromkeys(["spec.kinds[]", "spec.modes[]", "spec.scenario", "spec.order"], str),
    **dict.fromkeys(["spec.populations[]", "spec.levels[]", "spec.writes", "spec.threads",
                     "spec.target_threads", "spec.warmup", "spec.seed", "spec.repeat",
                     "spec.cpu"], int),
    **dict.fromkeys(["spec.rate", "spec.compress"], _NUMBER),
    **dict.fromkeys(["target.kernel_release", "target.model", "target.transport",
                     "target.abi", "target.device", "target.fingerprint"], str),
    **dict.fromkeys(["target.cpus", "target.pid_max", "target.threads_max", "target.sdk"], int),
    "target.extra": dict,
}  # fmt: skip

_JSON_NAMES: dict[type, str] = {dict: "an object", list: "a list", str: "a string",
                                int: "an integer", float: "a number", bool: "true/false",
                                type(None): "null"}  # fmt: skip


def _json_type(value: object) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def _field_values(meta: dict[str, Any], path: str) -> list[tuple[str, Any]]:
    """(name, value) of every value at dotted `path` (`x[]`: each item) that is present
    (an absent or null field is not; a null list item is)."""
    found: list[tuple[str, Any]] = [("", meta)]
    for part in path.split("."):
        each = part.endswith("[]")
        key = part.removesuffix("[]")
        nxt: list[tuple[str, Any]] = []
        for name, obj in found:
            if not isinstance(obj, dict) or obj.get(key) is None:
                continue  # absent, or the parent's own type is reported on its own path
            name, value = f"{name}.{key}".lstrip("."), obj[key]
            if each:
                if isinstance(value, list):
                    nxt += [(f"{name}[{i}]", v) for i, v in enumerate(value)]  # null too
            else:
                nxt.append((name, value))
        found = nxt
    return found


def check_run_fields(f: Path, meta: dict[str, Any]) -> None:
    """DataError naming the first run.json field whose JSON type is not RUN_FIELDS'."""
    for path, want in RUN_FIELDS.items():
        for name, value in _field_values(meta, path):
            ok = isinstance(value, want) and not (isinstance(value, bool) and want is not bool)
            if not ok:
                expected = "a number" if want == _NUMBER else _JSON_NAMES[want]  # type: ignore[index]
                shown = "" if value is None else f" ({json.dumps(value)[:40]})"
                raise DataError(
                    f"{f}: field {name!r} is {_json_type(value)}{shown}, not {expected}: the "
                    "file was damaged or edited; restore it from a copy or profile again"
                )


def read_run(path: Path | str) -> RunInfo:
    """Parse `<path>/run.json`; DataError with a clear message if it is not a run."""
    path = Path(path)
    f = path / RUN_JSON
    try:
        meta = json.loads(f.read_text())
    except FileNotFoundError:
        raise DataError(f"{path} is not a droidoom run (no {RUN_JSON})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{f} is not valid JSON ({e}): not a droidoom run") from None
    except OSError as e:
        raise DataError(f"{f}: cannot read it ({e.strerror})") from None
    if not isinstance(meta, dict):
        raise DataError(f"{f} holds a JSON {type(meta).__name__}, not a run's object")
    if meta.get("format") != FORMAT:
        raise DataError(
            f"{path} has run format {meta.get('format')!r}; this droidoom reads {FORMAT}"
        )
    check_run_fields(f, meta)
    return RunInfo(path, meta)


def find_runs(paths: str | Path | Iterable[str | Path]) -> list[RunInfo]:
    """Run directories named by `paths`: each a run, or a folder (e.g. a farm) of runs.

    A run named directly must be readable (DataError otherwise); a bad run found inside
    a folder is reported with a warning and skipped, so one corrupt run does not cost
    the rest of a farm.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = list(paths)
    runs: list[RunInfo] = []
    for p in map(Path, paths):
        if p.is_file() and p.name in (RUN_JSON, SAMPLES):
            p = p.parent  # `report RUN/run.json` means the run
        if (p / RUN_JSON).is_file():
            runs.append(read_run(p))
        elif p.is_dir():
            for q in sorted(q.parent for q in p.glob(f"**/{RUN_JSON}")):
                try:
                    runs.append(read_run(q))
                except DataError as e:
                    warnings.warn(f"skipped: {e}", DataWarning, stacklevel=2)
        elif p.exists():
            raise DataError(
                f"{p} is a file; pass a run directory (the folder holding {RUN_JSON}) or a "
                "folder of runs"
            )
        else:
            raise DataError(f"{p} does not exist")
    if not runs:
        raise DataError(f"no droidoom runs under {', '.join(map(str, paths))}")
    if any(r.meta.get("status") == RunStatus.RUNNING for r in runs):
        from .streamed import settle_all  # a --kernel run whose droidoom was killed

        runs = settle_all(runs)
    return runs


class DataWarning(UserWarning):
    """A stored run was unreadable and skipped (the message names the file)."""


def _read_samples(f: Path, columns: list[str] | None) -> pd.DataFrame:
    try:
        table = pq.read_table(f, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"{f} is not a readable samples file ({e}); `droidoom recover` can rebuild it "
            "from the device's records"
        ) from None
    df: pd.DataFrame = table.to_pandas(split_blocks=True, self_destruct=True)
    return df


def check_writable(path: Path | str, what: str, *, directory: bool = False) -> Path:
    """UsageError now, before any work, if `path` (an output file, or with `directory`
    a folder to fill) cannot be written; return where the file will really be written
    (`output_target`: a symlink of yours is followed)."""
    path = Path(path)
    if not directory:
        path = output_target(path, what)  # a device node, fifo, foreign link: refused
    folder = path if directory else path.parent
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent  # the folder will be created under its first existing parent
    why = None
    if not directory and path.is_dir():
        why = "it is a directory"
    elif not probe.is_dir():
        why = f"{probe} is not a directory"
    elif not os.access(probe, os.W_OK | os.X_OK):
        why = f"{probe} is not writable"
    elif path.exists() and not directory and not os.access(path, os.W_OK):
        why = "the file is not writable"
    if why:
        raise UsageError(f"{what} {path}: cannot write there ({why}); choose another path")
    return path


def read_tables(runs: Iterable[RunInfo], name: str) -> pd.DataFrame | None:
    """A capture's table (`<run>/<name>.parquet`, e.g. perf_symbols) of every run that has
    one, with a run_id column; None when none has it. A damaged table is skipped, said."""
    frames = []
    for r in runs:
        f = r.path / f"{name}.parquet"
        if f.is_file():
            try:
                frames.append(pd.read_parquet(f).assign(run_id=r.run_id))
            except (OSError, ValueError, pa.ArrowException) as e:
                warnings.warn(f"skipped {f}: {e}", DataWarning, stacklevel=2)
    return pd.concat(frames, ignore_index=True) if frames else None


def load(
    paths: str | Path | Iterable[str | Path],
    *,
    columns: list[str] | None = None,
    include_partial: bool = True,
) -> pd.DataFrame:
    """One typed samples DataFrame across one or many runs (or folders of runs).

    Args:
        paths: run directories, or folders containing them (searched recursively).
        columns: read only these columns (faster on big runs); schema columns only,
            plus "fingerprint".
        include_partial: also load runs that were interrupted (status "partial").

    Returns:
        A DataFrame typed by `droidoom.schema` (categoricals for run_id, device, kind,
        mode, role; fixed-width integers elsewhere), with a `fingerprint` column: runs
        with equal fingerprints measured alike and may be pooled; `droidoom report` keeps
        unlike ones apart (see droidoom/fingerprint.py).
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = list(paths)
    named = {Path(p) for p in paths}  # runs named directly must load; found ones may skip
    runs = [r for r in find_runs(paths) if include_partial or r.status == RunStatus.COMPLETE]
    frames = []
    for r in runs:
        f = r.path / SAMPLES
        if not f.is_file():
            continue  # a run interrupted before its first records were pulled
        # split_blocks: one block per column, so pandas does not copy every column into
        # consolidated 2-D blocks; self_destruct frees each Arrow column once converted.
        # Together they halve load time and peak memory on 10M-row runs.
        try:
            read = [c for c in columns if c != FINGERPRINT] if columns else None
            frame = _read_samples(f, read)
            schema.check(frame, f, read)  # NaN, text or a missing column: say which
            if columns is None or FINGERPRINT in columns:
                fp = fingerprint(r.meta)  # which runs measured alike (droidoom/fingerprint.py)
                frame[FINGERPRINT] = pd.Categorical.from_codes(
                    np.zeros(len(frame), dtype=np.int8), pd.Index([fp]))
            frames.append(frame)
        except DataError as e:
            if r.path in named:
                raise
            warnings.warn(f"skipped: {e}", DataWarning, stacklevel=2)
    if not frames:
        return schema.empty() if columns is None else schema.empty()[columns]
    if len(frames) == 1:
        df = frames[0]
    else:
        # Categories differ between runs: give every frame the union so concat keeps
        # categoricals (concatenating mismatched categories silently yields object).
        for c in frames[0].select_dtypes("category").columns:
            if all(c in fr.columns for fr in frames):
                cats = union_categoricals([fr[c] for fr in frames]).categories
                for fr in frames:
                    fr[c] = fr[c].cat.set_categories(cats)
        df = pd.concat(frames, ignore_index=True)
    if columns is None:
        return schema.coerce(df)
    return df
