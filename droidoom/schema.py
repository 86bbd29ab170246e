"""The one place that defines the samples DataFrame (one row per timed write).

Every producer (runner, capture joins) and consumer (load, analysis, plots) goes
through `SAMPLE_COLUMNS` / `coerce()` so the dtypes never drift between modules.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from .errors import DataError
from .vocab import KINDS as KINDS  # re-exported; the specs need them without pandas
from .vocab import MODES as MODES

#: column -> dtype. Categoricals for low-cardinality labels, fixed-width ints elsewhere.
SAMPLE_COLUMNS: dict[str, str] = {
    "run_id": "category",  # run directory id (timestamp + device)
    "device": "category",  # serial or "local:<hostname>"
    "kind": "category",  # single | threaded | multiprocess
    "mode": "category",  # reopen | persistent
    "population": "int32",  # extra processes alive during the write
    "threads": "int16",  # threads per population process
    "point": "int32",  # sweep point index
    "seq": "int64",  # index of the write in the plan
    "adj_from": "int16",  # oom_score_adj before the write
    "adj_to": "int16",  # value written
    "role": "category",  # ActivityManager role of adj_to (e.g. foreground, cached)
    "latency_ns": "int64",  # helper clock: open/write/close duration
    "t_ns": "int64",  # CLOCK_MONOTONIC at write start (target clock)
    "cpu": "int16",  # CPU the write ran on (-1 unknown)
    "err": "int16",  # errno of a failed write, 0 if it succeeded
}

#: Columns added when ftrace capture ran (nullable: a write may have no event).
KERNEL_COLUMNS: dict[str, str] = {
    "kernel_ns": "Int64",  # sys_enter(write) .. sys_exit(write) duration from ftrace
    "kernel_adj": "Int16",  # oom_score_adj the kernel recorded for this write
}

#: Columns added when perfetto capture ran (nullable: a write may have no event).
PERFETTO_COLUMNS: dict[str, str] = {
    "trace_offset_ns": "Int64",  # oom_score_adj_update time minus t_ns (CLOCK_MONOTONIC)
    "trace_adj": "Int16",  # oom_score_adj the trace recorded for this write
}

#: Columns a run with blocked kinds adds (older runs lack it: every write counted).
BLOCK_COLUMNS: dict[str, str] = {
    "warmup": "bool",  # one of the first writes after a switch of kind: not in medians or fits
}

#: Columns of a `--scenario replay:TRACE` run (older runs lack them): whose write each
#: row is, the helper's target and the trace's process it stands for. Nullable: pooled
#: with other runs, their rows have none.
REPLAY_COLUMNS: dict[str, str] = {
    "target": "Int16",  # the helper's target index (run.json `targets`)
    "target_pid": "Int32",  # that target's pid on the device (missing: not known)
    "trace_pid": "Int32",  # the replayed process's pid in the trace
    "trace_process": "category",  # the replayed process's name in the trace
}

#: Columns of a `--measure kill` run (absent: the run timed oom_score_adj writes). Its rows
#: are kills: `kind` is the victim's, `latency_ns` holds process_mrelease's duration (the
#: call whose process walk the kill verdict looks for), `adj_from`/`adj_to` are 0, `role`
#: is "cached" and `err` is the errno of the first call that failed (`stage`).
KILL_COLUMNS: dict[str, str] = {
    "measure": "category",  # "kill"
    "open_ns": "int64",  # pidfd_open
    "kill_ns": "int64",  # pidfd_send_signal(SIGKILL)
    "reap_ns": "int64",  # waitpid after process_mrelease (the victim's exit)
    "spawn_ns": "int64",  # fork .. victim ready (threads made, memory touched), untimed
    "stage": "category",  # ok | spawn | pidfd_open | pidfd_send_signal | process_mrelease
    "shared": "bool",  # mm still shared (Threads > 1, or a live CLONE_VM child) at the call
    "victim_threads": "int16",  # victim's Threads just before process_mrelease (0 unknown)
    "victim_idle": "bool",  # the victim ran SCHED_IDLE (so it could not run first)
    "victim_pinned": "bool",  # the victim was pinned to the killer's CPU
}

#: Category orders that make tables and plots read naturally.
CATEGORY_ORDERS: dict[str, tuple[str, ...]] = {"kind": KINDS, "mode": MODES}


def coerce(df: pd.DataFrame) -> pd.DataFrame:
    """Return `df` with every known column cast to its schema dtype.

    Unknown columns are kept as they are; missing sample columns raise KeyError so a
    producer bug shows up at the source, not in a plot later.
    """
    missing = [c for c in SAMPLE_COLUMNS if c not in df.columns]
    if missing:
        raise KeyError(f"samples frame lacks columns {missing}")
    out = {}
    for col in df.columns:
        dtype = dtype_of(col)
        s = df[col]
        if dtype == "category":
            if not isinstance(s.dtype, pd.CategoricalDtype):
                s = s.astype(str).astype("category")
            order = CATEGORY_ORDERS.get(col)
            if order is not None:
                present = [str(c) for c in s.cat.categories]
                extra = sorted(set(present) - set(order))
                s = s.cat.set_categories(list(order) + extra)
        elif col in BLOCK_COLUMNS:  # pooled with an older run: its rows were all timed
            s = s.astype("boolean").fillna(False).astype(bool)
        elif dtype is not None:
            s = s.astype(pd.api.types.pandas_dtype(dtype))  # the name as astype reads it
        out[col] = s
    # copy=False: keep each column's buffer (and skip consolidating same-dtype columns into
    # 2-D blocks), so a frame already in schema (e.g. fresh from parquet) costs no copy: on
    # 10M rows that copy was up to a second of page faults. The result may share buffers
    # with `df`: fine, callers pass temporaries (and pandas 3's copy-on-write isolates edits).
    return pd.DataFrame(out, index=df.index, copy=False)


def timed(df: pd.DataFrame) -> pd.DataFrame:
    """The rows that count in a statistic: successful writes that are not the warm-up after
    a switch of kind (stats.sort_groups does the same in its bands)."""
    keep = df["err"] == 0
    if "warmup" in df.columns:
        keep &= ~df["warmup"].astype(bool)
    return df[keep]


def is_kill(df: pd.DataFrame) -> bool:
    """Do these samples come from a `--measure kill` run (rows are kills, not writes)?"""
    return "measure" in df.columns and bool((df["measure"].astype(str) == "kill").any())


def dtype_of(col: str) -> str | None:
    """The schema dtype of a samples column (None for a column the schema does not know)."""
    return (SAMPLE_COLUMNS.get(col) or KERNEL_COLUMNS.get(col) or PERFETTO_COLUMNS.get(col)
            or BLOCK_COLUMNS.get(col) or KILL_COLUMNS.get(col)
            or REPLAY_COLUMNS.get(col))  # fmt: skip


_FIX = "the file was damaged or written by another tool; restore it from a copy or profile again"


def check(df: pd.DataFrame, what: object, columns: Iterable[str] | None = None) -> None:
    """DataError naming `what` (the file) and the column when a stored samples frame does
    not fit the schema: a missing column, values that are not integers (text, NaN, out of
    the dtype's range) where integers belong, or negative latencies (the helper records
    unsigned durations). `columns`: only these were read. Cheap on a well-formed frame:
    columns already in their schema dtype skip every check but the latency sign."""
    need = list(SAMPLE_COLUMNS) if columns is None else [c for c in columns if c in SAMPLE_COLUMNS]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise DataError(f"{what} lacks column(s) {', '.join(missing)} of a samples file; {_FIX}")
    for col in df.columns:
        dtype = dtype_of(col)
        if dtype in (None, "category", "bool", "boolean") or str(df[col].dtype) == dtype:
            continue  # not an integer column (the warm-up flag, labels) or already typed
        _check_ints(df[col], pd.api.types.pandas_dtype(dtype), f"{what}: column {col!r}")
    if "latency_ns" in df.columns:
        neg = int((df["latency_ns"] < 0).sum())
        if neg:
            raise DataError(
                f"{what}: {neg} of {len(df)} writes have a negative latency_ns (lowest "
                f"{df['latency_ns'].min()}): a duration cannot be negative; {_FIX}"
            )


def _check_ints(s: pd.Series, dtype: np.dtype | pd.api.extensions.ExtensionDtype,
                where: str) -> None:  # fmt: skip
    """DataError unless `s` casts to integer `dtype` without loss."""
    if not pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        raise DataError(f"{where} holds {s.dtype} values where integers belong; {_FIX}")
    nullable = isinstance(dtype, pd.api.extensions.ExtensionDtype)
    values = s.dropna() if nullable else s
    na = int(values.isna().sum())
    if na:
        raise DataError(f"{where} has {na} missing (NaN) values of {len(s)}; {_FIX}")
    if not len(values):
        return
    info = np.iinfo(dtype.numpy_dtype if nullable else dtype)  # type: ignore[union-attr]
    arr = values.to_numpy(dtype="float64")
    lo, hi = float(arr.min()), float(arr.max())
    if not (info.min <= lo and hi <= info.max) or not np.array_equal(arr, np.round(arr)):
        raise DataError(f"{where} holds values ({lo:.12g}..{hi:.12g}) that are not {info.dtype} "
                        f"integers; {_FIX}")  # fmt: skip


def empty() -> pd.DataFrame:
    """An empty, correctly typed samples frame."""
    return coerce(pd.DataFrame({c: pd.Series([], dtype="object") for c in SAMPLE_COLUMNS}))
