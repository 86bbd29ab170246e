"""Record the ftrace text fixtures of tests/test_trace_formats.py from this kernel.

Run once as root (tracefs at /sys/kernel/tracing): `python3 tests/data/traces/record_ftrace.py`.
For each trace_clock it creates its own tracefs instance, enables oom/oom_score_adj_update,
writes trace_marker lines (so the first update lies past 64 KiB, as in a busy phone's
atrace capture) and then oom_score_adj values of a child it spawned, reads the instance's
`trace` file into `ftrace_<clock>.txt`, kills that child and removes the instance.
`ftrace_lossy.txt` uses a 4 KiB per-CPU buffer: the header's entries-written exceeds
entries-in-buffer (the kernel overwrote the oldest events).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
HERE = Path(__file__).resolve().parent


def record(clock: str, updates: int, marks: int, buffer_kb: int | None = None) -> str:
    """The `trace` text of one capture (see the module docstring)."""
    inst = TRACEFS / "instances" / f"droidoom-fixture-{os.getpid()}"
    inst.mkdir()
    child = subprocess.Popen(["sleep", "60"])
    try:
        (inst / "trace_clock").write_text(clock)
        if buffer_kb is not None:
            (inst / "buffer_size_kb").write_text(str(buffer_kb))
        (inst / "events/oom/oom_score_adj_update/enable").write_text("1")
        (inst / "tracing_on").write_text("1")
        with open(inst / "trace_marker", "w") as m:
            for i in range(marks):
                m.write(f"droidoom fixture padding line {i:05d}\n")
                m.flush()
        adj = Path(f"/proc/{child.pid}/oom_score_adj")
        for i in range(updates):
            adj.write_text(str((i * 37) % 1000))
        (inst / "tracing_on").write_text("0")
        return (inst / "trace").read_text()
    finally:
        child.kill()  # our own child only
        child.wait()
        (inst / "events/oom/oom_score_adj_update/enable").write_text("0")
        inst.rmdir()


def main() -> None:
    if os.geteuid() != 0 or not (TRACEFS / "instances").is_dir():
        sys.exit("needs root and tracefs at /sys/kernel/tracing")
    for clock in ("boot", "mono", "counter", "x86-tsc"):
        marks = 900 if clock == "boot" else 0
        (HERE / f"ftrace_{clock}.txt").write_text(record(clock, 40, marks))
    (HERE / "ftrace_lossy.txt").write_text(record("boot", 5000, 0, buffer_kb=4))


if __name__ == "__main__":
    main()
