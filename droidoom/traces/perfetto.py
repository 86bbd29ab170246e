"""Read a Perfetto protobuf trace offline: oom_score_adj updates, processes, clocks, losses.

Used by `--capture perfetto` (join the kernel's events to the helper's writes) and by
trace replay (issue 12: a phone's real adj changes). Only the protobuf classes that the
`perfetto` wheel ships are used; its TraceProcessor (a native binary it downloads at
first use) is not, so this works on a lab host without network.

A trace file is a `Trace` message: a sequence of field-1 (`packet`) records, each a
length-delimited `TracePacket`. We frame the records ourselves instead of parsing the
whole `Trace` at once, so a truncated file still yields every complete packet and the
error (or `TraceData.truncated_at`) says where it broke. `compressed_packets` (deflate,
what `compression_type: COMPRESSION_TYPE_DEFLATE` produces) and gzip'd files are
expanded transparently.

What droidoom reads from a trace::

    ftrace_events.event[].oom_score_adj_update   -> oom_events (ts boot ns, cpu, writer tid,
                                                   target pid, comm, adj)
    ftrace_events.lost_events, ftrace_stats,     -> losses (kernel ring overruns and dropped
    trace_stats.buffer_stats,                       events since START_OF_TRACE, traced's
    previous_packet_dropped                         chunks discarded/overwritten, writers'
                                                    packet loss, dropped packets)
    process_tree                                 -> processes, threads (tid -> tgid)
    ftrace_events.event[].sched_process_free     -> exits (ts, pid): when a process died
    clock_snapshot                               -> clocks (to turn BOOTTIME into MONOTONIC)
    service_event.all_data_sources_started       -> sources_started_ns (what happened before
                                                   it was not recorded)
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .wire import import_pb, iter_packet_bytes, looks_like_trace

__all__ = ["iter_packet_bytes"]  # re-exported: the wire framing lives in trace_wire.py

#: Builtin clock ids (perfetto's BuiltinClock enum).
CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME = 1, 3, 6
#: FtraceClock enum (FtraceEventBundle.ftrace_clock; 0, unspecified, is the boot clock).
FTRACE_CLOCK_NAMES = {1: "unknown", 2: "global", 3: "local", 4: "mono_raw"}
CLOCK_NAMES = {1: "realtime", 2: "realtime_coarse", 3: "monotonic", 4: "monotonic_coarse",
               5: "monotonic_raw", 6: "boottime"}  # fmt: skip

#: The kernel's OOM_SCORE_ADJ_MIN..MAX: an update outside it (or to a pid <= 0) cannot
#: have happened, so the file is damaged or not a kernel's record (see TraceData.impossible).
ADJ_MIN, ADJ_MAX = -1000, 1000
#: How many impossible updates TraceData keeps as examples for the message.
EXAMPLES = 3

#: Column dtypes of TraceData.oom_events (one row per oom_score_adj_update, time order).
OOM_EVENT_COLUMNS: dict[str, str] = {
    "ts_ns": "int64",  # event time on the trace clock (BOOTTIME on Android), ns
    "cpu": "int16",  # CPU whose ring buffer held the event
    "writer_tid": "int32",  # thread that wrote /proc/<pid>/oom_score_adj (lmkd, helper)
    "writer_tgid": "Int32",  # its process, from process_tree threads (NA if unknown)
    "pid": "int32",  # process whose oom_score_adj changed
    "comm": "category",  # its comm at the time of the write
    "adj": "int16",  # new oom_score_adj
}

#: Column dtypes of TraceData.processes (one row per process_tree entry, first sighting).
PROCESS_COLUMNS: dict[str, str] = {
    "pid": "int32",
    "ppid": "int32",
    "uid": "Int32",
    "name": "object",  # cmdline[0] (or comm when cmdline_is_comm / kernel threads)
    "cmdline": "object",  # whole cmdline joined with spaces
    "ts_ns": "int64",  # packet time of the first snapshot that listed it
}


@dataclass
class TraceData:
    """What droidoom reads from one Perfetto trace (see the module docstring)."""

    oom_events: pd.DataFrame
    processes: pd.DataFrame
    threads: pd.DataFrame  # tid, tgid, name
    clocks: pd.DataFrame  # one row per clock_snapshot; one column per clock name (ns)
    packets: int = 0
    truncated_at: int | None = None  # byte offset of an incomplete final record
    lost_events: int = 0  # sum of FtraceEventBundle.lost_events flags (bundles with losses)
    ftrace_overrun: int = 0  # kernel ring-buffer overruns (END_OF_TRACE ftrace_stats)
    ftrace_dropped: int = 0  # events the kernel dropped (END_OF_TRACE ftrace_stats)
    chunks_discarded: int = 0  # traced buffer chunks lost (DISCARD policy buffer full)
    chunks_overwritten: int = 0  # traced buffer chunks overwritten (RING_BUFFER policy wrapped)
    writer_packet_loss: int = 0  # packets a producer's trace writer lost (buffer_stats)
    packets_dropped: int = 0  # packets flagged previous_packet_dropped (not a sequence's first)
    primary_clock: int = CLOCK_BOOTTIME
    #: trace-clock time at which every data source had started (traced's service event);
    #: None in traces that lack it. `perfetto --background` returns before this moment.
    sources_started_ns: int | None = None
    ftrace_errors: list[str] = field(default_factory=list)
    #: sched_process_free events (ts_ns, pid), time order: a task's end (for process
    #: lifetimes in trace replay; empty when the trace config did not enable the event)
    exits: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame({"ts_ns": pd.Series([], dtype="int64"),
                                              "pid": pd.Series([], dtype="int32")})
    )
    #: oom_score_adj_update events left out of oom_events because their values cannot be
    #: real (adj outside ADJ_MIN..ADJ_MAX, pid <= 0, not a number): never wrapped into
    #: range or dropped unsaid; `impossible_note()` tells the user.
    impossible: int = 0
    impossible_examples: list[str] = field(default_factory=list)  # "line 7: ...", first few

    def clock_offset_ns(self, src: int = CLOCK_BOOTTIME, dst: int = CLOCK_MONOTONIC) -> int | None:
        """Median of (src - dst) over the trace's clock snapshots: subtract it from a
        `src` timestamp to get `dst` time. None when no snapshot holds both clocks."""
        a, b = CLOCK_NAMES.get(src), CLOCK_NAMES.get(dst)
        if self.clocks.empty or a not in self.clocks or b not in self.clocks:
            return None
        d = (self.clocks[a] - self.clocks[b]).dropna()
        return int(np.median(d.to_numpy(np.int64))) if len(d) else None

    def writer_pids(self, name: str) -> set[int]:
        """Pids of processes called `name` (cmdline[0] or its basename), e.g. "lmkd"."""
        n = self.processes["name"].astype(str)
        return set(self.processes.loc[(n == name) | n.str.endswith("/" + name), "pid"])

    def updates_by(self, name: str = "lmkd") -> pd.DataFrame:
        """The oom_events written by process `name` (lmkd: ActivityManager's decisions,
        what a replay reproduces), in time order; all events when the trace's process
        list does not name that writer (say so to the user: the filter did nothing)."""
        pids = self.writer_pids(name)
        if not pids:
            return self.oom_events
        ev = self.oom_events
        return ev[ev["writer_tgid"].isin(pids) | ev["writer_tid"].isin(pids)]

    @property
    def losses(self) -> int:
        """Anything lost between the kernel and the file (0 means a complete record)."""
        return sum(self.loss_counts().values())

    def loss_counts(self) -> dict[str, int]:
        """Each kind of loss the trace records, by what it counts (all kinds, 0 or not)."""
        return {
            "lost_event_bundles": self.lost_events,  # ftrace bundles / CPUs flagged lost
            "ftrace_overrun": self.ftrace_overrun,  # events the kernel ring overwrote
            "ftrace_dropped": self.ftrace_dropped,  # events the kernel dropped / LOST lines
            "chunks_discarded": self.chunks_discarded,  # traced buffer full (DISCARD)
            "chunks_overwritten": self.chunks_overwritten,  # traced buffer wrapped (RING)
            "writer_packet_loss": self.writer_packet_loss,  # a producer's writer lost packets
            "packets_dropped": self.packets_dropped,  # previous_packet_dropped flags
        }

    def loss_text(self) -> str:
        """The trace's nonzero losses in words ("" when none), for notes and warnings."""
        words = {
            "lost_event_bundles": "ftrace bundles/CPUs flagged with lost events",
            "ftrace_overrun": "events overwritten in the kernel's ring buffer",
            "ftrace_dropped": "events the kernel dropped",
            "chunks_discarded": "traced buffer chunks discarded (buffer full)",
            "chunks_overwritten": "traced buffer chunks overwritten (ring buffer wrapped)",
            "writer_packet_loss": "packets lost by a producer's trace writer",
            "packets_dropped": "packets dropped before a sequence's next packet",
        }
        return ", ".join(f"{n:,} {words[k]}" for k, n in self.loss_counts().items() if n)

    def summary(self) -> dict[str, Any]:
        """Counts for run.json."""
        return {
            "packets": self.packets,
            "oom_events": int(len(self.oom_events)),
            "processes": int(len(self.processes)),
            "clock_snapshots": int(len(self.clocks)),
            "truncated_at": self.truncated_at,
            "lost_event_bundles": self.lost_events,
            "ftrace_overrun": self.ftrace_overrun,
            "ftrace_dropped": self.ftrace_dropped,
            "chunks_discarded": self.chunks_discarded,
            "chunks_overwritten": self.chunks_overwritten,
            "writer_packet_loss": self.writer_packet_loss,
            "packets_dropped": self.packets_dropped,
            "losses": self.losses,
            "sources_started_ns": self.sources_started_ns,
            "ftrace_errors": self.ftrace_errors[:5],
            "impossible_updates": self.impossible,
        }

    def impossible_note(self, what: str = "trace") -> str | None:
        """'N updates with impossible values skipped: ...' (None when there were none)."""
        if not self.impossible:
            return None
        return (
            f"{what}: {self.impossible} oom_score_adj updates with impossible values skipped: "
            f"{'; '.join(self.impossible_examples)}"
            + ("; ..." if self.impossible > len(self.impossible_examples) else "")
            + f" (a kernel only records adj {ADJ_MIN}..{ADJ_MAX} and pid > 0: the file is "
            "damaged or was not written by a kernel; record the trace again)"
        )


class _Collector:
    """Accumulates rows from packets (plain lists: one DataFrame build at the end)."""

    def __init__(self) -> None:
        self.oom: dict[str, list[Any]] = {c: [] for c in OOM_EVENT_COLUMNS if c != "writer_tgid"}
        self.procs: dict[int, tuple[Any, ...]] = {}
        self.threads: dict[int, tuple[Any, ...]] = {}
        self.clocks: list[dict[str, int]] = []
        self.exits: list[tuple[int, int]] = []
        self.packets = 0
        self.lost = self.overrun = self.dropped = self.discarded = 0
        self.overwritten = self.writer_loss = self.packets_dropped = 0
        #: per-CPU (overrun, dropped) at START_OF_TRACE: END_OF_TRACE counts are since boot
        self.start_stats: dict[int, tuple[int, int]] = {}
        self.primary = CLOCK_BOOTTIME
        self.errors: list[str] = []
        self.started: int | None = None
        self.clock_error: str | None = None  # a bundle on a clock we cannot convert
        self.impossible = 0
        self.impossible_examples: list[str] = []

    def packet(self, pkt: Any, pb: Any) -> None:  # protobuf messages: untyped
        self.packets += 1
        # the service flags a sequence's first packet too: only later ones mean a loss
        if pkt.previous_packet_dropped and not pkt.first_packet_on_sequence:
            self.packets_dropped += 1
        which = pkt.WhichOneof("data")
        if which == "ftrace_events":
            self._bundle(pkt.ftrace_events)
        elif which == "process_tree":
            self._tree(pkt.process_tree, pkt.timestamp)
        elif which == "clock_snapshot":
            snap = pkt.clock_snapshot
            row = {CLOCK_NAMES.get(c.clock_id, f"clock{c.clock_id}"): c.timestamp
                   for c in snap.clocks}  # fmt: skip
            self.clocks.append(row)
            if snap.HasField("primary_trace_clock"):
                self.primary = int(snap.primary_trace_clock)
        elif which == "ftrace_stats":
            st = pkt.ftrace_stats
            if st.phase == pb.FtraceStats.START_OF_TRACE:
                self.start_stats = {c.cpu: (c.overrun, c.dropped_events) for c in st.cpu_stats}
            if st.phase == pb.FtraceStats.END_OF_TRACE:
                base = self.start_stats
                self.overrun += sum(max(c.overrun - base.get(c.cpu, (0, 0))[0], 0)
                                    for c in st.cpu_stats)  # fmt: skip
                self.dropped += sum(max(c.dropped_events - base.get(c.cpu, (0, 0))[1], 0)
                                    for c in st.cpu_stats)  # fmt: skip
            self.errors += [f"failed event {e}" for e in st.failed_ftrace_events]
            self.errors += [f"unknown event {e}" for e in st.unknown_ftrace_events]
        elif which == "trace_stats":  # cumulative: periodic copies, the last is the largest
            bufs = pkt.trace_stats.buffer_stats
            self.discarded = max(self.discarded, sum(b.chunks_discarded for b in bufs))
            self.overwritten = max(self.overwritten, sum(b.chunks_overwritten for b in bufs))
            self.writer_loss = max(self.writer_loss, sum(b.trace_writer_packet_loss for b in bufs))
        elif which == "compressed_packets":
            self.compressed(pkt.compressed_packets, pb)
        elif which == "service_event" and pkt.service_event.all_data_sources_started:
            self.started = pkt.timestamp if self.started is None else self.started

    def compressed(self, blob: bytes, pb: Any) -> None:
        try:
            inner = zlib.decompress(blob)
        except zlib.error as e:
            self.errors.append(f"bad compressed_packets: {e}")
            return
        payloads, _ = iter_packet_bytes(inner)
        for p in payloads:
            self.packet(pb.TracePacket.FromString(p), pb)

    def _bundle_offset(self, bundle: Any) -> int | None:
        """ns to add to this bundle's event times for the trace's boot clock; None (and
        `clock_error` set) when its ftrace_clock is another clock with no pair to convert."""
        clk = int(bundle.ftrace_clock)
        if clk == 0:  # FTRACE_CLOCK_UNSPECIFIED: the boot clock, as the rest of the trace
            return 0
        if bundle.HasField("ftrace_timestamp") and bundle.HasField("boot_timestamp"):
            return int(bundle.boot_timestamp) - int(bundle.ftrace_timestamp)
        name = FTRACE_CLOCK_NAMES.get(clk, f"clock {clk}")
        self.clock_error = self.clock_error or (
            f"its ftrace events (cpu {bundle.cpu}) were timed on the ftrace {name} clock, not "
            "the boot clock the rest of the trace uses, and their bundle gives no "
            "ftrace/boot timestamp pair to convert them"
        )
        return None

    def _bundle(self, bundle: Any) -> None:
        if bundle.lost_events:
            self.lost += 1
        off = self._bundle_offset(bundle)
        if off is None:
            return
        o = self.oom
        # The hot loop of a million-update trace: each protobuf field read once, the
        # list appends bound once per bundle (the cpu column is filled per bundle).
        ts_, tid_, pid_, comm_, adj_ = (o[c].append for c in ("ts_ns", "writer_tid", "pid",
                                                              "comm", "adj"))  # fmt: skip
        n0 = len(o["ts_ns"])
        for ev in bundle.event:
            if not ev.HasField("oom_score_adj_update"):
                if ev.HasField("sched_process_free"):
                    self.exits.append((ev.timestamp + off, ev.sched_process_free.pid))
                continue
            u = ev.oom_score_adj_update
            pid, adj = u.pid, u.oom_score_adj
            if not (ADJ_MIN <= adj <= ADJ_MAX and pid > 0):
                self._impossible(f"packet {self.packets}: pid={pid} oom_score_adj={adj}")
                continue  # int16 would wrap 2^31-1 to -1: a real-looking update
            ts_(ev.timestamp + off)
            tid_(ev.pid)
            pid_(pid)
            comm_(u.comm)
            adj_(adj)
        o["cpu"].extend([bundle.cpu] * (len(o["ts_ns"]) - n0))

    def _impossible(self, example: str) -> None:
        self.impossible += 1
        if len(self.impossible_examples) < EXAMPLES:
            self.impossible_examples.append(example)

    def _tree(self, tree: Any, ts: int) -> None:
        for p in tree.processes:
            if p.pid in self.procs:
                continue
            args = list(p.cmdline)
            self.procs[p.pid] = (p.pid, p.ppid, p.uid if p.HasField("uid") else None,
                                 args[0] if args else "", " ".join(args), ts)  # fmt: skip
        for t in tree.threads:
            self.threads.setdefault(t.tid, (t.tid, t.tgid, t.name))

    def frames(self) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        # Each list straight into its dtype: pandas' inference over a million Python
        # objects per column cost seconds.
        cols = {c: np.fromiter(v, dtype=OOM_EVENT_COLUMNS[c], count=len(v))
                for c, v in self.oom.items() if c != "comm"}  # fmt: skip
        oom = pd.DataFrame({**cols, "comm": pd.Categorical(self.oom["comm"])})
        threads = pd.DataFrame(list(self.threads.values()), columns=["tid", "tgid", "name"])
        tgid = dict(zip(threads["tid"], threads["tgid"], strict=True))
        for p in self.procs:
            tgid.setdefault(p, p)  # a process's main thread
        oom["writer_tgid"] = oom["writer_tid"].map(tgid)
        oom = oom[list(OOM_EVENT_COLUMNS)].astype(OOM_EVENT_COLUMNS)
        oom = oom.sort_values("ts_ns", kind="stable").reset_index(drop=True)
        procs = pd.DataFrame(list(self.procs.values()), columns=list(PROCESS_COLUMNS))
        procs = procs.astype(PROCESS_COLUMNS).sort_values("pid").reset_index(drop=True)
        clocks = pd.DataFrame(self.clocks).astype("Int64") if self.clocks else pd.DataFrame()
        return oom, procs, threads.astype({"tid": "int32", "tgid": "int32"}), clocks


def read_bytes(path: str | Path) -> bytes:
    """The trace file's bytes (gunzipped if it is gzip), with a clear error if missing."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read trace {path}: {e.strerror or e}") from None
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as e:
            raise DataError(f"{path}: a broken gzip file ({e}); record the trace again") from None
    return data


def parse_trace(data: bytes, what: str = "trace", *, allow_truncated: bool = True) -> TraceData:
    """Parse a serialized Perfetto trace (`Trace` proto bytes).

    Raises DataError for an empty file, a file that is not a Perfetto protobuf trace
    (e.g. ftrace text, JSON, a systrace HTML), or (with allow_truncated=False) a
    truncated one; a truncated trace otherwise keeps its complete packets and sets
    `truncated_at`."""
    pb = import_pb()
    if not data:
        raise DataError(f"{what} is empty: was perfetto stopped before it wrote anything?")
    if not looks_like_trace(data):
        head = bytes(data[:16])
        hint = ""
        if head.lstrip().startswith((b"#", b"<", b"{", b"[")) or b"tracer:" in head:
            hint = " (it looks like text: ftrace/atrace text, JSON or HTML)"
        raise DataError(
            f"{what} is not a Perfetto protobuf trace{hint}: it starts with {head!r}; "
            "record one with `perfetto -o FILE` (binary output, not --txt output)"
        )
    payloads, truncated_at = iter_packet_bytes(data)
    if truncated_at is not None and not allow_truncated:
        raise DataError(
            f"{what} is truncated at byte {truncated_at} of {len(data)} after "
            f"{len(payloads)} packets; pull it again after perfetto has exited"
        )
    col = _Collector()
    from google.protobuf.message import (  # type: ignore[import-untyped, unused-ignore]
        DecodeError,  # no stubs installed
    )

    for i, p in enumerate(payloads):
        try:
            pkt = pb.TracePacket.FromString(p)
        except DecodeError as e:
            msg = f"{what}: packet {i} does not decode ({e}); the file is corrupt"
            raise DataError(msg) from None
        col.packet(pkt, pb)
    if col.clock_error:
        raise DataError(f"{what}: {col.clock_error}; record it again with perfetto's default "
                        "ftrace clock (boot) or a perfetto that writes the pair")  # fmt: skip
    if col.packets == 0:
        raise DataError(f"{what} holds no complete packet (truncated at byte {truncated_at})")
    oom, procs, threads, clocks = col.frames()
    exits = pd.DataFrame(col.exits, columns=["ts_ns", "pid"]).astype({"ts_ns": "int64",
                                                                      "pid": "int32"})
    return TraceData(
        oom_events=oom, processes=procs, threads=threads, clocks=clocks,
        exits=exits.sort_values("ts_ns", kind="stable").reset_index(drop=True),
        packets=col.packets, truncated_at=truncated_at, lost_events=col.lost,
        ftrace_overrun=col.overrun, ftrace_dropped=col.dropped,
        chunks_discarded=col.discarded, chunks_overwritten=col.overwritten,
        writer_packet_loss=col.writer_loss, packets_dropped=col.packets_dropped,
        primary_clock=col.primary, ftrace_errors=col.errors,
        sources_started_ns=col.started,
        impossible=col.impossible, impossible_examples=col.impossible_examples,
    )  # fmt: skip


def read_trace(path: str | Path, *, allow_truncated: bool = True) -> TraceData:
    """`parse_trace` of a file (plain or gzip'd)."""
    return parse_trace(read_bytes(path), str(path), allow_truncated=allow_truncated)


def parse_ftrace_text(text: str, what: str = "trace") -> TraceData:
    """The same TraceData from ftrace/atrace text (`trace` file, `atrace` or
    `perfetto --txt`-free captures): oom_score_adj_update lines only; timestamps are the
    text's (microseconds, on whatever trace_clock recorded them); no process list or
    clock snapshots. Losses: `entries-in-buffer/entries-written` (the ring overwrote the
    difference) and lost-event markers (`CPU:N [LOST M EVENTS]`)."""
    from .ftrace_text import parse_trace as parse_text

    events, header = parse_text(text, line_numbers=True)
    if header.integer_clock is not None:
        raise DataError(
            f"{what} was recorded with trace_clock {header.integer_clock} (its timestamps "
            "are integers without a decimal point: a count, not nanoseconds), so its "
            "rate and gaps cannot be read; record it again with "
            "`echo boot > /sys/kernel/tracing/trace_clock` (or mono, global, local)"
        )
    ev = events[events["event"].astype(str) == "oom_score_adj_update"]
    # a compiled regex per line (not Series.str.extract, seconds per million lines)
    found = [_OOM_FIELDS.search(f) for f in ev["fields"].astype(str).tolist()]
    parts = [m.groups() if m else (None, None, None) for m in found]
    raw = pd.DataFrame(parts, columns=[0, 1, 2], index=ev.index, dtype=object)
    # as floats: "abc" is NaN, 999999999999 stays itself (no wrap, no cast error)
    pid, adj = _numbers(raw[0]), _numbers(raw[2])
    ok = (pid > 0) & adj.between(ADJ_MIN, ADJ_MAX)  # NaN compares False
    bad = ev.loc[~ok]
    oom = pd.DataFrame({
        "ts_ns": ev["ts_ns"], "cpu": ev["cpu"], "writer_tid": ev["pid"],
        "writer_tgid": ev["tgid"], "pid": pid, "comm": raw[1], "adj": adj,
    })[ok]  # fmt: skip
    oom = oom.astype(OOM_EVENT_COLUMNS).sort_values("ts_ns", kind="stable")
    empty = pd.DataFrame({c: pd.Series([], dtype=t) for c, t in PROCESS_COLUMNS.items()})
    # entries-written - entries-in-buffer: what the ring overwrote; LOST lines (a reader
    # that fell behind) may tell of the same events: the larger count, not the sum
    written = (header.entries_written or 0) - (header.entries_in_buffer or 0)
    overrun = max(written - header.lost_events, 0)
    return TraceData(
        oom_events=oom.reset_index(drop=True), processes=empty,
        threads=pd.DataFrame({"tid": [], "tgid": [], "name": []}), clocks=pd.DataFrame(),
        packets=0, lost_events=len(header.lost_by_cpu), ftrace_overrun=overrun,
        ftrace_dropped=header.lost_events, primary_clock=0, impossible=len(bad),
        impossible_examples=[f"line {n}: {f.strip()}" for n, f in
                             zip(bad["line"][:EXAMPLES], bad["fields"][:EXAMPLES],
                                 strict=True)],
    )  # fmt: skip


_OOM_FIELDS = re.compile(r"pid=(\S*) comm=(.*) oom_score_adj=(\S*)\s*$")


def _numbers(s: pd.Series) -> pd.Series:
    """Decimal strings as float64, NaN where not a number: parsed in C when every one is
    an integer (a real trace), else value by value."""
    try:
        values = np.array(s.tolist(), dtype=str).astype(np.int64).astype("float64")
        return pd.Series(values, index=s.index)
    except (ValueError, OverflowError):
        return pd.to_numeric(s, errors="coerce").astype("float64")


def read_any(path: str | Path, *, allow_truncated: bool = True) -> TraceData:
    """A Perfetto protobuf trace or ftrace text (plain, gzip'd, atrace's `TRACE:` capture,
    `atrace -z`, systrace HTML), told apart by content (droidoom/traces/detect.py).
    DataError names the file and what it looks like when it is neither."""
    from .detect import sniff

    fmt, data = sniff(read_bytes(path), str(path))
    if fmt == "text":
        return parse_ftrace_text(data.decode("utf-8", errors="replace"), str(path))
    # Perfetto, or neither: parse_trace says truncated/corrupt/"not a Perfetto trace"
    return parse_trace(data, str(path), allow_truncated=allow_truncated)


def require_oom_events(trace: TraceData, what: str = "trace") -> None:
    """DataError naming what is missing when the trace has no oom_score_adj_update."""
    if len(trace.oom_events):
        return
    impossible = trace.impossible_note(what)
    if impossible:
        raise DataError(impossible)
    why = "; ".join(trace.ftrace_errors[:3])
    raise DataError(
        f"{what} has no oom/oom_score_adj_update events"
        + (f" ({why})" if why else "")
        + "; record with ftrace_config { ftrace_events: \"oom/oom_score_adj_update\" }"
    )
