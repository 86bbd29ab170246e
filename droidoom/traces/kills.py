"""lmkd's kills in a phone's trace (for `droidoom cost`): when lmkd killed which pid.

lmkd marks each kill with atrace (system/memory/lmkd, lmkd.cpp; what Perfetto's
android_lmk_events reads), in one of three forms over the years, all ftrace `print`
(tracing_mark_write) events in a trace:

- `N|<lmkd>|lowmemorykiller|lmk,<pid>,<reason>,<adj>,...`: an instant on the
  "lowmemorykiller" track (2025+);
- `B|<lmkd>|lmk,<pid>,<reason>,<adj>,...`: a slice around the kill (2021+);
- `C|<lmkd>|kill_one_process|<pid>` then `...|0`: a counter (the original form).

A trace without them (atrace's lmkd category off) may still hold the kernel's side:
`signal_generate` with sig=9 sent by lmkd (the process that wrote the oom_score_adj
updates, or one named lmkd) - the fallback, said as such.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .perfetto import _Collector, read_bytes
from .wire import import_pb, iter_packet_bytes

#: atrace payloads that mark one lmkd kill; group "pid" is the victim.
_ATRACE_KILL = re.compile(
    r"^(?:N\|\d+\|lowmemorykiller\|lmk,(?P<n>\d+)"
    r"|B\|\d+\|lmk,(?P<b>\d+)"
    r"|C\|\d+\|kill_one_process\|(?P<c>\d+))"
)
#: ftrace text: `comm-pid (tgid) [cpu] flags ts: signal_generate: sig=9 ... pid=N ...`
_SIG_FIELDS = re.compile(r"\bsig=(\d+)\b.*?\bpid=(\d+)")
SIGKILL = 9


@dataclass(frozen=True)
class TraceKills:
    """lmkd's kills in a trace: `kills` (ts_ns, pid) in time order and how they were
    found: "atrace" (lmkd's own marks), "signal" (SIGKILLs lmkd sent) or "" (none)."""

    kills: pd.DataFrame
    source: str


def atrace_kill_pid(buf: str) -> int | None:
    """The victim's pid if `buf` (an atrace payload) marks an lmkd kill, else None (also
    for the counter's reset to 0)."""
    m = _ATRACE_KILL.match(buf.strip())
    if m is None:
        return None
    pid = int(m.group("n") or m.group("b") or m.group("c"))
    return pid if pid > 0 else None


class _KillCollector(_Collector):
    """perfetto_trace's collector that also keeps print and signal_generate events."""

    def __init__(self) -> None:
        super().__init__()
        self.marks: list[tuple[int, int]] = []  # (ts, victim) from atrace
        self.signals: list[tuple[int, int, int]] = []  # (ts, sender tid, victim)

    def _bundle(self, bundle: Any) -> None:
        super()._bundle(bundle)
        off = self._bundle_offset(bundle)
        if off is None:
            return
        for ev in bundle.event:
            which = ev.WhichOneof("event")
            if which == "print":
                pid = atrace_kill_pid(ev.print.buf)
                if pid is not None:
                    self.marks.append((ev.timestamp + off, pid))
            elif which == "signal_generate" and ev.signal_generate.sig == SIGKILL:
                self.signals.append((ev.timestamp + off, ev.pid, ev.signal_generate.pid))


def _frame(rows: list[tuple[int, int]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["ts_ns", "pid"]).astype({"ts_ns": "int64", "pid": "int64"})
    return df.sort_values("ts_ns", kind="stable").reset_index(drop=True)


def _choose(marks: list[tuple[int, int]], signals: list[tuple[int, int, int]],
            lmkd: set[int]) -> TraceKills:  # fmt: skip
    """lmkd's own marks when there are any, else the SIGKILLs its threads sent."""
    if marks:
        return TraceKills(_frame(marks), "atrace")
    sent = [(ts, victim) for ts, sender, victim in signals if sender in lmkd]
    return TraceKills(_frame(sent), "signal" if sent else "")


def read_kills(path: str | Path, lmkd_tids: set[int] | None = None) -> TraceKills:
    """lmkd's kills in a Perfetto trace or ftrace text (see the module docstring).
    `lmkd_tids`: lmkd's threads (the oom_score_adj writers) for the SIGKILL fallback."""
    from .detect import sniff

    fmt, data = sniff(read_bytes(path), str(path))
    if fmt == "text":
        return _text_kills(data.decode("utf-8", errors="replace"), lmkd_tids or set())
    pb = import_pb()
    col = _KillCollector()
    for p in iter_packet_bytes(data)[0]:
        col.packet(pb.TracePacket.FromString(p), pb)
    lmkd = set(lmkd_tids or ())
    # and lmkd by name: its process (cmdline /system/bin/lmkd) and every thread of it
    procs = {int(pid) for pid, row in col.procs.items() if str(row[3]).endswith("lmkd")}
    lmkd |= procs | {int(tid) for tid, (_, tgid, name) in col.threads.items()
                     if tgid in procs or name == "lmkd"}  # fmt: skip
    return _choose(col.marks, col.signals, lmkd)


def _text_kills(text: str, lmkd: set[int]) -> TraceKills:
    from .ftrace_text import parse_trace as parse_text

    ev, _ = parse_text(text)
    kind = ev["event"].astype(str)
    marks = []
    for ts, fields in zip(ev["ts_ns"][kind.isin(["tracing_mark_write", "print"])],
                          ev["fields"][kind.isin(["tracing_mark_write", "print"])],
                          strict=True):  # fmt: skip
        pid = atrace_kill_pid(str(fields))
        if pid is not None:
            marks.append((int(ts), pid))
    sig = ev[kind == "signal_generate"]
    signals = []
    lmkd = set(lmkd) | set(sig["pid"][sig["comm"].astype(str) == "lmkd"].astype(int))
    for ts, sender, fields in zip(sig["ts_ns"], sig["pid"], sig["fields"].astype(str),
                                  strict=True):  # fmt: skip
        m = _SIG_FIELDS.search(fields)
        if m and int(m.group(1)) == SIGKILL:
            signals.append((int(ts), int(sender), int(m.group(2))))
    return _choose(marks, signals, lmkd)


def alive_at(kills: pd.DataFrame, writes: pd.DataFrame) -> np.ndarray:
    """Processes alive at each kill: the count at the last write before it (`writes`:
    a ReplayTrace's events, ts_ns and alive), else at the first write."""
    ts = writes["ts_ns"].to_numpy(np.int64)
    alive = writes["alive"].to_numpy(np.int64)
    if not len(ts):
        return np.zeros(len(kills), dtype=np.int64)
    i = np.searchsorted(ts, kills["ts_ns"].to_numpy(np.int64), side="right") - 1
    return alive[np.clip(i, 0, len(ts) - 1)]
