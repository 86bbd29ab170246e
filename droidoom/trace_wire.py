"""Protobuf wire framing of a Perfetto `Trace` file, read by hand (droidoom/perfetto_trace.py).

A trace file is a `Trace` message: a sequence of field-1 (`packet`) records, each a
length-delimited `TracePacket`. Framing the records ourselves, instead of parsing the
whole `Trace` at once, lets a truncated file still yield every complete packet and say
where it broke.
"""

from __future__ import annotations


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
            tag, pos = _varint(view, pos)
            wire = tag & 7
            if wire == 2:
                length, pos = _varint(view, pos)
                if pos + length > n:
                    return out, start
                if tag >> 3 == 1:
                    out.append(view[pos : pos + length])
                pos += length
            elif wire == 0:
                _, pos = _varint(view, pos)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                raise ValueError(f"wire type {wire}")
        except (IndexError, ValueError):
            return out, start
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
            tag, pos = _varint(view, pos)
            wire = tag & 7
            if tag >> 3 == 0:
                return None  # field 0 does not exist
            if wire == 2:
                length, pos = _varint(view, pos)
                if pos + length > n:
                    break
                if tag >> 3 == 1:
                    out.append(view[pos : pos + length])
                pos += length
            elif wire == 0:
                _, pos = _varint(view, pos)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                return None
        except IndexError:
            break  # cut off by the end of `data`
        except ValueError:
            return None
    return out
