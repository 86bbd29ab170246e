"""Protobuf wire framing of a Perfetto `Trace` file, read by hand (droidoom/traces/perfetto.py).

A trace file is a `Trace` message: a sequence of field-1 (`packet`) records, each a
length-delimited `TracePacket`. Framing the records ourselves, instead of parsing the
whole `Trace` at once, lets a truncated file still yield every complete packet and say
where it broke.
"""

from __future__ import annotations

from typing import Any

from ..errors import DataError


def _varint(buf: bytes | memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    n = len(buf)
    while True:
        if pos >= n:
            raise IndexError(pos)
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _record(view: memoryview, pos: int, n: int) -> tuple[int, memoryview | None, int]:
    """The protobuf record at `pos`: (field number, payload when length-delimited, next
    position). IndexError when the end of the data cuts it off, ValueError for a field,
    wire type or varint no `Trace` has."""
    tag, pos = _varint(view, pos)
    wire = tag & 7
    if tag >> 3 == 0:
        raise ValueError("field 0")  # no protobuf message has it: not a trace
    if wire == 2:
        length, pos = _varint(view, pos)
        if pos + length > n:
            raise IndexError("record cut off by the end of the data")
        return tag >> 3, view[pos : pos + length], pos + length
    if wire == 0:
        _, pos = _varint(view, pos)
        return tag >> 3, None, pos
    if wire in (1, 5):
        return tag >> 3, None, pos + (8 if wire == 1 else 4)
    raise ValueError(f"wire type {wire}")


def iter_packet_bytes(data: bytes) -> tuple[list[memoryview], int | None]:
    """Split a serialized `Trace` into its TracePacket payloads.

    Returns (payloads, truncated_at): `truncated_at` is the byte offset of the first
    incomplete record, None when the file ends cleanly. Records other than field 1
    (e.g. padding written by some tools) are skipped."""
    view = memoryview(data)
    out: list[memoryview] = []
    pos, n = 0, len(data)
    while pos < n:
        start = pos
        try:
            field, payload, pos = _record(view, pos, n)
        except (IndexError, ValueError):
            return out, start
        if field == 1 and payload is not None:
            out.append(payload)
    return out, None


def looks_like_trace(data: bytes) -> bool:
    """Whether `data` starts like a serialized `Trace` (its first record is a `packet`:
    tag 0x0a = field 1, length-delimited)."""
    return len(data) > 1 and data[0] == 0x0A


def leading_packets(data: bytes, limit: int = 64) -> list[memoryview] | None:
    """The complete `packet` payloads among the first `limit` records of `data`, or None
    when those records do not frame as a `Trace` (a bad wire type or varint before the
    data ends: text, JSON, a zlib stream). Records cut off by the end of `data` end the
    walk, so a prefix of a trace frames as a trace."""
    view = memoryview(data)
    out: list[memoryview] = []
    pos, n = 0, len(data)
    for _ in range(limit):
        if pos >= n:
            break
        try:
            field, payload, pos = _record(view, pos, n)
        except IndexError:
            break  # cut off by the end of `data`
        except ValueError:
            return None
        if field == 1 and payload is not None:
            out.append(payload)
    return out


def import_pb() -> Any:  # untyped: the generated module is a boundary
    """The perfetto wheel's generated `perfetto_trace_pb2`, or a DataError saying what to get."""
    try:
        # the perfetto wheel ships no type information
        from perfetto.protos.perfetto.trace import (  # type: ignore[import-untyped, unused-ignore]
            perfetto_trace_pb2 as pb,
        )
    except ImportError as e:  # pragma: no cover - a core dependency
        raise DataError(
            f"cannot read Perfetto traces: {e}; install droidoom's dependencies "
            "(pip install perfetto)"
        ) from None
    return pb
