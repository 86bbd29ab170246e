"""Parsers for ftrace text output (the `trace` file of a tracefs instance).

Handles the layouts kernels have used for the default (non-latency) format::

    # entries-in-buffer/entries-written: 11/11   #P:2
              sh-6262    [001] .....   563.444186: oom_score_adj_update: pid=6262 ...
           <...>-1234  (  1200) [000] d..1   12.345678: tracing_mark_write: B|1200|x
      kworker/0:1-12    (-------) [000] ....   1.000001: sys_exit: NR 1 = 2
    CPU:1 [LOST 42 EVENTS]

pid padded to 5 (< 5.9) or 7 columns, an optional tgid column (options/record-tgid),
4-char (< 5.15) or 5-char irq-info flags or none (options/irq-info off), timestamps as
`sec.usec` (ns clocks) or plain counters (counter/x86-tsc clocks).

With options/raw set, every event line is `<pid> <cpu> <ts in ns> <rest>`; the text
form only carries microseconds. `with_ns_timestamps()` zips the two reads of the same
stopped buffer (same order) to give the text rows nanosecond timestamps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import CaptureError

_EVENT_RE = (
    r"^\s*(?P<comm>.*?)-(?P<pid>\d+)\s+"
    r"(?:\(\s*(?P<tgid>\d+|-+)\)\s+)?"
    r"\[(?P<cpu>\d+)\]\s+"
    r"(?:(?P<flags>\S{4,5})\s+)?"
    r"(?P<sec>\d+)(?:\.(?P<frac>\d+))?:\s+"
    r"(?P<event>[^\s:]+):\s?(?P<fields>.*)$"
)
_RAW_RE = r"^\s*(?P<pid>\d+)\s+(?P<cpu>\d+)\s+(?P<ts>\d+)\s+(?P<rest>.*)$"
_LOST_RE = re.compile(r"^CPU:(\d+) \[LOST (\d+) EVENTS\]", re.M)
_ENTRIES_RE = re.compile(r"^#\s*entries-in-buffer/entries-written:\s*(\d+)/(\d+)\s+#P:(\d+)", re.M)

#: Column dtypes of the parsed events frame.
EVENT_COLUMNS: dict[str, str] = {
    "comm": "category",
    "pid": "int32",
    "tgid": "Int32",  # NA when the column is absent or "(-------)"
    "cpu": "int16",
    "flags": "category",  # irq-info flags ("d..1." / "d..1"), NA when not printed
    "ts_ns": "int64",  # ns; from the text (usec resolution) unless zipped with raw
    "event": "category",
    "fields": "object",  # everything after "event: "
}


@dataclass
class TraceHeader:
    """Counts the `trace` file reports besides its events."""

    entries_in_buffer: int | None = None
    entries_written: int | None = None
    cpus: int | None = None
    lost_by_cpu: dict[int, int] = field(default_factory=dict)  # from CPU:N [LOST M EVENTS]
    #: the trace_clock an integer-timestamp capture (no decimal point) was likely
    #: recorded with ("counter", "uptime", "x86-tsc"): not nanoseconds; None when the
    #: timestamps are `sec.frac` (a clock that counts time: local, global, mono, boot...)
    integer_clock: str | None = None

    @property
    def lost_events(self) -> int:
        return sum(self.lost_by_cpu.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "entries_in_buffer": self.entries_in_buffer,
            "entries_written": self.entries_written,
            "lost_events": self.lost_events,
            "lost_by_cpu": {str(k): v for k, v in sorted(self.lost_by_cpu.items())},
        }


def _lines(text: str) -> pd.Series:
    return pd.Series(text.splitlines(), dtype=object)


def parse_header(text: str) -> TraceHeader:
    """Buffer counts and lost-event markers of a `trace` file."""
    h = TraceHeader()
    # A ^-anchored multiline regex is tried at every character of the text (seconds on a
    # 100 MB trace): looked for only where a plain substring search finds its words.
    m = _ENTRIES_RE.search(text) if "entries-in-buffer" in text else None
    if m:
        h.entries_in_buffer, h.entries_written, h.cpus = (int(g) for g in m.groups())
    for cpu, n in _LOST_RE.findall(text) if "LOST" in text else ():
        h.lost_by_cpu[int(cpu)] = h.lost_by_cpu.get(int(cpu), 0) + int(n)
    return h


def parse_trace(text: str, *, line_numbers: bool = False) -> tuple[pd.DataFrame, TraceHeader]:
    """Event lines of a `trace` file as a typed frame (see EVENT_COLUMNS), in file order,
    plus the header counts. Comment, LOST and unrecognised lines are skipped.
    `line_numbers` adds a `line` column (1-based line in `text`) to point a user at a
    bad line of a file they gave."""
    import pyarrow as pa
    import pyarrow.compute as pc

    # The lines go through Arrow's regex and casts (C++), not one pandas call per line
    # (Series.str.extract on Python objects): a 1M-line trace took ~50 s that way.
    lines = pa.array(text.splitlines(), type=pa.large_string())
    body = pc.invert(pc.or_(pc.starts_with(lines, "#"), pc.starts_with(lines, "CPU:")))
    found = pc.extract_regex(lines, _EVENT_RE)  # null where a line does not match
    keep = pc.and_(body, found.is_valid())
    at = np.flatnonzero(keep.to_numpy(zero_copy_only=False))
    m = found.filter(keep)
    g = {name: m.field(name) for name in _groups(_EVENT_RE)}
    frac = g["frac"]  # "" where the timestamp has no fraction
    # sec.usec (or any fraction width) -> ns; a plain counter stays as it is.
    digits = pc.utf8_length(frac).to_numpy(zero_copy_only=False).astype(np.int64)
    scale = np.where(digits > 0, 10 ** np.clip(9 - digits, 0, 9), 1).astype(np.int64)
    sec = _ints(g["sec"])
    fr = _ints(pc.if_else(pc.equal(frac, ""), "0", pc.utf8_slice_codeunits(frac, 0, 9)))
    ts = np.where(digits > 0, sec * 1_000_000_000 + fr * scale, sec)
    header = parse_header(text)
    if len(digits) and not (digits > 0).any():
        header.integer_clock = guess_integer_clock(ts)
    tgid = g["tgid"]  # digits, or dashes / "" when the column is absent: NA
    none = pa.scalar(None, pa.large_string())
    tgid = pc.cast(pc.if_else(pc.match_substring_regex(tgid, r"^\d+$"), tgid, none), pa.int64())
    flags = pc.if_else(pc.equal(g["flags"], ""), none, g["flags"])  # not printed: NA
    df = pd.DataFrame(
        {
            "comm": _category(pc.utf8_trim_whitespace(g["comm"])),
            "pid": _ints(g["pid"]),
            "tgid": pd.array(tgid.to_pandas(), dtype="Int64"),
            "cpu": _ints(g["cpu"]),
            "flags": _category(flags),
            "ts_ns": ts,
            "event": _category(g["event"]),
            "fields": g["fields"].to_numpy(zero_copy_only=False).astype(object),
        }
    )
    typed = _typed(df)
    if line_numbers:
        typed["line"] = (at + 1).astype(np.int64)
    return typed.reset_index(drop=True), header


def _ints(digits: Any) -> npt.NDArray[np.int64]:
    """An Arrow array of decimal strings (the regex let only digits through) as int64."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out: npt.NDArray[np.int64] = pc.cast(digits, pa.int64()).to_numpy(zero_copy_only=False)
    return out.astype(np.int64)


def _category(values: Any) -> pd.Categorical:
    """An Arrow string array (nulls: NA) as a pandas Categorical, encoded in C++."""
    out: pd.Categorical = pd.Categorical(values.dictionary_encode().to_pandas())
    return out


def guess_integer_clock(ts: np.ndarray) -> str:
    """Which trace_clock printed these integer timestamps: x86-tsc counts CPU cycles
    (huge values), uptime counts jiffies (many events share a tick), counter counts
    trace_clock calls (small, a distinct value per event)."""
    if float(np.max(ts)) > 1e10:
        return "x86-tsc"
    steps = np.diff(np.sort(ts))
    return "uptime" if len(steps) and float(np.mean(steps == 0)) > 0.5 else "counter"


def _groups(regex: str) -> list[str]:
    return list(re.compile(regex).groupindex)


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    return df.astype(EVENT_COLUMNS)


def parse_raw(text: str) -> pd.DataFrame:
    """Event lines of a `trace` file read with options/raw: pid, cpu, ts_ns (exact)."""
    lines = _lines(text)
    body = lines[~lines.str.startswith("#") & ~lines.str.startswith("CPU:")]
    if not len(body):
        return pd.DataFrame({"pid": [], "cpu": [], "ts_ns": []}, dtype=np.int64)
    m = body.str.extract(_RAW_RE).dropna(subset=["pid"])
    return pd.DataFrame(
        {
            "pid": m["pid"].astype(np.int64).to_numpy(),
            "cpu": m["cpu"].astype(np.int64).to_numpy(),
            "ts_ns": m["ts"].astype(np.int64).to_numpy(),
        }
    )


def with_ns_timestamps(events: pd.DataFrame, raw: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Give `events` (from the text read) the exact ns timestamps of `raw` (the raw read
    of the same, stopped buffer). Both reads walk the per-CPU buffers in the same merged
    order, so rows correspond one to one; each pair must agree on pid, cpu and the
    microsecond. Returns (events, "ns"), or (events unchanged, "us") if they do not."""
    if len(events) != len(raw) or not len(events):
        return events, "us"
    same = (
        (events["pid"].to_numpy() == raw["pid"].to_numpy())
        & (events["cpu"].to_numpy() == raw["cpu"].to_numpy())
        & (np.abs(events["ts_ns"].to_numpy() - raw["ts_ns"].to_numpy()) <= 1000)
    )
    if not same.all():
        return events, "us"
    out = events.copy()
    out["ts_ns"] = raw["ts_ns"].to_numpy()
    return out, "ns"


def add_write_fields(events: pd.DataFrame) -> pd.DataFrame:
    """Add typed columns for the events the join uses (NA elsewhere):

    nr (sys_enter/sys_exit syscall number), ret (sys_exit return value),
    oom_pid / oom_adj (oom_score_adj_update pid and value).
    """
    out = events.copy()
    f = out["fields"].astype(str)
    ev = out["event"].astype(str)
    sc = f.where(ev.isin(["sys_enter", "sys_exit"])).str.extract(r"^NR (-?\d+)(?: = (-?\d+))?")
    oom = f.where(ev == "oom_score_adj_update").str.extract(
        r"pid=(\d+) comm=.* oom_score_adj=(-?\d+)\s*$"
    )
    out["nr"] = pd.to_numeric(sc[0], errors="coerce").astype("Int64")
    out["ret"] = pd.to_numeric(sc[1], errors="coerce").astype("Int64")
    out["oom_pid"] = pd.to_numeric(oom[0], errors="coerce").astype("Int32")
    out["oom_adj"] = pd.to_numeric(oom[1], errors="coerce").astype("Int16")
    return out


def parse_cpu_stats(text: str) -> dict[int, dict[str, int]]:
    """Per-CPU ring-buffer stats printed as `== cpuN` followed by the content of
    per_cpu/cpuN/stats (`entries: 4`, `overrun: 0`, `dropped events: 0`, ...)."""
    stats: dict[int, dict[str, int]] = {}
    cur: dict[str, int] | None = None
    for line in text.splitlines():
        m = re.match(r"^== cpu(\d+)", line)
        if m:
            cur = stats.setdefault(int(m.group(1)), {})
            continue
        k, sep, v = line.partition(":")
        if cur is not None and sep and re.fullmatch(r"\s*\d+\s*", v):
            cur[k.strip().replace(" ", "_")] = int(v)
    return stats


def require_events(events: pd.DataFrame, what: str) -> None:
    """Raise CaptureError when a trace that should hold events holds none."""
    if not len(events):
        raise CaptureError(f"ftrace: {what} holds no events; was the instance armed?")
