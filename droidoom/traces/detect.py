"""Tell a trace file's format by its content, not its first bytes (issue 18).

A phone's trace reaches droidoom in many wrappings: a Perfetto protobuf trace (plain, gzip'd
or with deflate'd `compressed_packets`), ftrace text (the `trace` file, catapult's
`atrace_data_raw`, which starts with a newline), atrace's capture (`capturing trace...
done`, a `TRACE:` line, then the text), `atrace -z` (`TRACE:` then a zlib stream) and
systrace HTML (the text inside `<script class="trace-data">` blocks). `sniff` unwraps
the containers and says which of the two formats droidoom reads is left:

- Perfetto: the first records frame as `Trace` records and their packets decode;
- text: a tracer header (`# tracer:`) or ftrace event lines anywhere in the first
  `SNIFF_BYTES` bytes;
- zlib and gzip streams are expanded wherever they start (at byte 0, after `TRACE:`, in
  an HTML block).
"""

from __future__ import annotations

import base64
import binascii
import re
import zlib
from typing import Literal

from ..errors import DataError
from .wire import leading_packets

#: How far into a file the text markers are looked for (a busy phone's capture can hold
#: megabytes of other events before its first oom_score_adj_update).
SNIFF_BYTES = 4 << 20
#: Leading packets that must decode for a file to be read as a Perfetto trace.
SNIFF_PACKETS = 64
_GZIP = b"\x1f\x8b"
_ZLIB = (b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda")
_TRACE_LINE = re.compile(rb"^TRACE:[ \t]*\r?\n", re.M)
_HTML_BLOCK = re.compile(rb'<script class="trace-data"[^>]*>(.*?)</script>', re.S | re.I)
#: An ftrace event line: `comm-pid [cpu] flags? ts: event:` (see capture/ftrace_parse.py).
_EVENT_LINE = re.compile(
    rb"^\s*\S.*?-\d+\s+(?:\(\s*(?:\d+|-+)\)\s+)?\[\d+\]\s+(?:\S{4,5}\s+)?\d+(?:\.\d+)?:\s+[^\s:]+:",
    re.M,
)

Format = Literal["perfetto", "text", "unknown"]


def is_compressed(data: bytes) -> bool:
    """Whether `data` starts with a gzip or zlib header."""
    return data[:2] == _GZIP or data[:2] in _ZLIB


def inflate(data: bytes, what: str) -> bytes:
    """Expand the gzip or zlib stream `data` starts with (trailing bytes ignored)."""
    try:
        d = zlib.decompressobj(wbits=47)  # 32 + 15: a zlib or a gzip header
        out = d.decompress(data) + d.flush()
    except zlib.error as e:
        raise DataError(f"{what}: a broken compressed stream ({e}); copy the trace again") from None
    if not d.eof:
        raise DataError(f"{what}: the compressed stream is cut off after {len(out)} bytes of "
                        "trace; copy the trace again (all of it)")  # fmt: skip
    return out


def is_perfetto(data: bytes) -> bool:
    """Whether `data` is a sequence of `TracePacket` records that decode."""
    if not data or data[0] != 0x0A:  # a Trace's first record is a packet (field 1)
        return False
    packets = leading_packets(data, SNIFF_PACKETS)
    if not packets:
        return False
    from google.protobuf.message import (  # type: ignore[import-untyped, unused-ignore]
        DecodeError,  # no stubs installed
    )

    from .wire import import_pb

    pb = import_pb()
    try:
        for p in packets:
            pb.TracePacket.FromString(p)
    except DecodeError:
        return False
    return True


def is_ftrace_text(data: bytes) -> bool:
    """Whether `data` holds a tracer header or ftrace event lines in its first megabytes."""
    head = data[:SNIFF_BYTES]
    return b"# tracer:" in head or _EVENT_LINE.search(head) is not None


def _html_text(data: bytes, what: str) -> bytes | None:
    """The ftrace text of a systrace HTML file's trace-data blocks (None: no block holds
    any). A block is plain text, or base64 of a gzip/zlib stream (compressed captures)."""
    out = []
    for m in _HTML_BLOCK.finditer(data):
        block = m.group(1).strip()
        if not is_ftrace_text(block):
            try:
                raw = base64.b64decode(block, validate=False)
            except (binascii.Error, ValueError):
                continue
            if not is_compressed(raw):
                continue
            block = inflate(raw, what)
        if is_ftrace_text(block):
            out.append(block)
    return b"\n".join(out) if out else None


def sniff(data: bytes, what: str = "trace", depth: int = 3) -> tuple[Format, bytes]:
    """(format, the bytes to parse): containers (gzip, zlib, atrace's `TRACE:` header,
    systrace HTML) unwrapped, up to `depth` levels."""
    if is_perfetto(data):
        return "perfetto", data
    if depth > 0:
        if is_compressed(data):
            return sniff(inflate(data, what), what, depth - 1)
        m = _TRACE_LINE.search(data[:SNIFF_BYTES])
        if m and is_compressed(data[m.end() : m.end() + 2]):
            return sniff(inflate(data[m.end() :], what), what, depth - 1)
        if b'class="trace-data"' in data[:SNIFF_BYTES]:
            text = _html_text(data, what)
            if text is not None:
                return "text", text
    if is_ftrace_text(data):
        return "text", data
    return "unknown", data
