"""Host side of the helper protocol (device_scripts/PROTOCOL.md): plan text out,
stdout event lines and binary records in."""

from __future__ import annotations

import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from .errors import DataError

PROTO_VERSION = 1
RECORDS_MAGIC = b"DDOOMREC"
HEADER_SIZE = 16
RECORD_SIZE = 32

#: numpy view of one 32-byte record (little-endian, packed).
RECORD_DTYPE = np.dtype(
    [
        ("t_ns", "<i8"),
        ("latency_ns", "<u4"),
        ("seq", "<u4"),
        ("adj_from", "<i2"),
        ("adj_to", "<i2"),
        ("point", "<u2"),
        ("target", "u1"),
        ("role", "u1"),
        ("cpu", "<i2"),
        ("err", "<i2"),
        ("reserved", "<u4"),
    ]
)
assert RECORD_DTYPE.itemsize == RECORD_SIZE

#: A kill plan's records file says version 2: one 48-byte record per kill (PROTOCOL.md).
KILL_RECORDS_VERSION = 2
KILL_RECORD_SIZE = 48
KILL_RECORD_DTYPE = np.dtype(
    [
        ("t_ns", "<i8"),  # just before pidfd_open
        ("mrelease_ns", "<u4"),  # process_mrelease(pidfd, 0)
        ("seq", "<u4"),  # index of the `k` line
        ("open_ns", "<u4"),  # pidfd_open
        ("kill_ns", "<u4"),  # pidfd_send_signal(SIGKILL)
        ("reap_ns", "<u4"),  # waitpid after process_mrelease
        ("spawn_ns", "<u4"),  # fork .. victim ready, before the clock
        ("point", "<u2"),
        ("victim", "u1"),
        ("role", "u1"),
        ("cpu", "<i2"),
        ("err", "<i2"),  # errno of `stage`
        ("stage", "u1"),  # KILL_STAGES index: the first call that failed (0: none)
        ("flags", "u1"),  # KILL_FLAGS bits
        ("threads", "<u2"),  # victim's Threads: just before process_mrelease
        ("reserved", "<u4"),
    ]
)
assert KILL_RECORD_DTYPE.itemsize == KILL_RECORD_SIZE
#: Stage codes of a kill record: which call failed (`ok`: none did).
KILL_STAGES = ("ok", "spawn", "pidfd_open", "pidfd_send_signal", "process_mrelease")
#: Flag bits of a kill record.
KILL_SHARED, KILL_VICTIM_IDLE, KILL_VICTIM_PINNED = 1, 2, 4

# Exit codes of the helper.
EXIT_OK, EXIT_USAGE, EXIT_REFUSED, EXIT_RUNTIME, EXIT_INTERRUPTED = 0, 2, 3, 4, 130


@dataclass(frozen=True)
class PlanTarget:
    """One target process the helper spawns for the whole run."""

    idx: int
    kind: str  # single | threaded | multiprocess
    threads: int  # threads in the target process
    rss_kb: int = 0  # kill plans: anonymous memory each victim touches (KiB)


@dataclass(frozen=True)
class PlanPoint:
    """One sweep point: a population size and the writes made while it is alive."""

    idx: int
    population: int  # extra processes
    threads: int  # threads per population process
    mode: str  # reopen | persistent
    rate_hz: float  # 0 = back to back
    warmup: int  # untimed writes per target before the timed ones
    writes: tuple[tuple[int, int, int], ...]  # (target idx, adj, role code); kills: adj 0
    gaps_us: tuple[int, ...] | None = None  # per write: pause before it (trace replay)


def render_plan(
    targets: Iterable[PlanTarget],
    points: Iterable[PlanPoint],
    writer: tuple[int, bool] | None = None,
    measure: str = "adj",
) -> str:
    """Plan file text for `droidoom-helper run`; `writer` = (cpu, fifo) adds a `writer`
    line (cpu -2: the core the writer starts on, -1: unpinned). `measure` "kill" makes a
    kill plan: the targets become `victim` templates and each write a `k` line (its adj
    is ignored): one fresh victim killed per line."""
    lines = [f"droidoom-plan {PROTO_VERSION}"]
    if writer is not None:
        lines.append(f"writer {int(writer[0])} {int(bool(writer[1]))}")
    kill = measure == "kill"
    if kill:
        lines += [f"victim {t.idx} {t.kind} {t.threads} {t.rss_kb}" for t in targets]
    else:
        lines += [f"target {t.idx} {t.kind} {t.threads}" for t in targets]
    for p in points:
        lines.append(f"point {p.idx} {p.population} {p.threads} {p.mode} {p.rate_hz:g} {p.warmup}")
        if kill:
            gaps = p.gaps_us or (0,) * len(p.writes)
            lines += [f"k {t} {r}" + (f" {g}" if p.gaps_us is not None else "")
                      for (t, _a, r), g in zip(p.writes, gaps, strict=True)]  # fmt: skip
        elif p.gaps_us is None:
            lines += [f"w {t} {a} {r}" for t, a, r in p.writes]
        else:
            pairs = zip(p.writes, p.gaps_us, strict=True)
            lines += [f"w {t} {a} {r} {g}" for (t, a, r), g in pairs]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Event:
    """One stdout line of the helper: `kind` is the first word, `fields` the key=values."""

    kind: str
    fields: dict[str, str] = field(default_factory=dict)

    def int(self, key: str, default: int | None = None) -> int:
        v = self.fields.get(key)
        if v is None:
            if default is None:
                raise KeyError(f"helper line '{self.kind}' lacks {key}")
            return default
        return int(v)


def parse_line(line: str) -> Event | None:
    """Parse one helper stdout line; None for blank or unparseable lines."""
    line = line.strip()
    if not line:
        return None
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    fields: dict[str, str] = {}
    for w in words[1:]:
        k, sep, v = w.partition("=")
        if sep:
            fields[k] = v
    return Event(words[0], fields)


def decode_records(data: bytes) -> np.ndarray:
    """Decode a records file (header + records). A trailing partial record is dropped.

    Write records come as `RECORD_DTYPE`, a kill plan's (version 2) as `KILL_RECORD_DTYPE`."""
    if len(data) < HEADER_SIZE:
        if not data:
            return np.zeros(0, dtype=RECORD_DTYPE)
        raise DataError("records file is shorter than its header; the run produced no data")
    if data[:8] != RECORDS_MAGIC:
        raise DataError("records file has a bad magic: not a droidoom-helper records file")
    version = int.from_bytes(data[8:12], "little")
    size = int.from_bytes(data[12:16], "little")
    if version == KILL_RECORDS_VERSION and size == KILL_RECORD_SIZE:
        n = (len(data) - HEADER_SIZE) // KILL_RECORD_SIZE
        return np.frombuffer(data, dtype=KILL_RECORD_DTYPE, count=n, offset=HEADER_SIZE)
    if version != PROTO_VERSION or size != RECORD_SIZE:
        raise DataError(
            f"records file version {version}/size {size} is not {PROTO_VERSION}/{RECORD_SIZE}; "
            "reinstall droidoom so host and helper match"
        )
    n = (len(data) - HEADER_SIZE) // RECORD_SIZE
    return np.frombuffer(data, dtype=RECORD_DTYPE, count=n, offset=HEADER_SIZE)


def key_values(text: str) -> dict[str, str]:
    """`key=value` lines of a target's shell output as a dict (the last value wins; lines
    without `=` are left out)."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out
