"""Traces from the field (issue 18): formats told apart by content, trace clocks, losses,
a one-update trace. The ftrace text fixtures were recorded from this machine's kernel by
tests/data/traces/record_ftrace.py; atrace, `atrace -z` and systrace HTML are built from
them the way those tools wrap the same text; Perfetto traces are built with the `perfetto`
wheel's protobuf classes."""

from __future__ import annotations

import base64
import gzip
import zlib
from pathlib import Path

import pytest

from droidoom import replay
from droidoom.errors import DataError
from droidoom.perfetto_trace import read_any

DATA = Path(__file__).parent / "data" / "traces"


def _text(name: str) -> bytes:
    return (DATA / f"ftrace_{name}.txt").read_bytes()


def _write(tmp_path: Path, name: str, data: bytes) -> Path:
    f = tmp_path / name
    f.write_bytes(data)
    return f


# --------------------------------------------------------------------------- 1. formats


def _html(text: bytes, compressed: bool = False) -> bytes:
    """A systrace HTML page: a JSON block and the ftrace text block (catapult's layout;
    `compressed`: base64 of a zlib stream, as compressed captures are embedded)."""
    body = base64.b64encode(zlib.compress(text)) if compressed else text
    return (b'<!DOCTYPE html>\n<html><head><meta charset="utf-8"/></head><body>\n'
            b'<script class="trace-data" type="application/text">{"traceEvents": []}'
            b"</script>\n<!-- BEGIN TRACE -->\n"
            b'  <script class="trace-data" type="application/text">\n' + body +
            b"\n  </script>\n<!-- END TRACE -->\n</body></html>\n")  # fmt: skip


WRAPPINGS = {
    # catapult's atrace_data_raw starts with a newline (0x0a: a protobuf packet tag)
    "leading-newline.txt": lambda t: b"\n" + t,
    # atrace's capture: its progress line, TRACE:, then the text (first update > 64 KiB)
    "atrace.txt": lambda t: b"capturing trace... done\nTRACE:\n" + t,
    "atrace-z.trace": lambda t: b"capturing trace... done\nTRACE:\n" + zlib.compress(t),
    "atrace-z-bare.trace": lambda t: b"TRACE:\n" + zlib.compress(t),
    "atrace-z.trace.gz": lambda t: gzip.compress(b"TRACE:\n" + zlib.compress(t)),
    "systrace.html": _html,
    "systrace-compressed.html": lambda t: _html(t, compressed=True),
}


@pytest.mark.parametrize("name", sorted(WRAPPINGS))
def test_text_wrappings_are_read_by_content(tmp_path, name):
    text = _text("boot")
    assert text.find(b"oom_score_adj_update:") > 65536  # the first update past 64 KiB
    f = _write(tmp_path, name, WRAPPINGS[name](text))
    tr = read_any(f, allow_truncated=False)
    assert len(tr.oom_events) == 40 and set(tr.oom_events["comm"].astype(str)) == {"sleep"}
    assert tr.oom_events["adj"].tolist()[:3] == [0, 37, 74]  # (i * 37) % 1000
    rt = replay.load(f)  # what `cost` and `profile --scenario replay:` read
    assert len(rt.events) == 40 and rt.duration_ns > 0


def test_leading_newline_text_is_not_a_truncated_perfetto_trace(tmp_path):
    """Before issue 18: "truncated at byte 100 ...", the newline read as a packet tag."""
    f = _write(tmp_path, "atrace_data_raw", b"\n" + _text("mono"))
    assert len(read_any(f, allow_truncated=False).oom_events) == 40


def test_neither_format_still_says_what_it_is(tmp_path):
    f = _write(tmp_path, "trace.json", b'{"traceEvents": []}')
    with pytest.raises(DataError, match="not a Perfetto protobuf trace"):
        read_any(f)
    f = _write(tmp_path, "broken.trace", b"TRACE:\n" + zlib.compress(_text("boot"))[:-50])
    with pytest.raises(DataError, match="compressed stream is cut off"):
        read_any(f)
