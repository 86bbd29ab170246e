"""Kernel-side capture sources for `droidoom profile --capture clock,ftrace,perf`.

See base.py for the life cycle the runner drives; ftrace.py and perf.py for what each
source records and adds to a run. This module is the registry: `build_sources` turns
`--capture` names into source objects.
"""

from __future__ import annotations

from ..errors import UsageError
from .base import (
    NR_WRITE,
    CaptureContext,
    CaptureResult,
    CaptureRunInfo,
    CaptureSource,
)
from .ftrace import FtraceSource
from .ftrace_join import validation_table
from .perf import PerfSource
from .perfetto import PerfettoSource

#: Names accepted by build_sources(); "clock" is implicit and builds nothing.
SOURCE_NAMES: tuple[str, ...] = ("clock", "ftrace", "perf", "perfetto")

#: Source classes in wrap order, innermost first: ftrace's wrap must exec the helper in the
#: same pid; perfetto wraps nothing (it records system-wide from arm() to collect()); perf
#: record forks the (ftrace-wrapped) command, so it is outermost.
_WRAP_ORDER: tuple[type[CaptureSource], ...] = (FtraceSource, PerfettoSource, PerfSource)


def build_sources(names: list[str]) -> list[CaptureSource]:
    """Capture sources for `--capture` names, in wrap order (innermost first).

    "clock" is accepted and builds nothing. Unknown names raise UsageError.
    """
    wanted = set()
    for raw in names:
        n = raw.strip().lower()
        if not n:
            continue
        if n not in SOURCE_NAMES:
            raise UsageError(
                f"unknown capture source {raw!r}; choose from {', '.join(SOURCE_NAMES)}"
            )
        wanted.add(n)
    return [cls() for cls in _WRAP_ORDER if cls.name in wanted]


__all__ = [
    "NR_WRITE",
    "SOURCE_NAMES",
    "CaptureContext",
    "CaptureResult",
    "CaptureRunInfo",
    "CaptureSource",
    "build_sources",
    "validation_table",
]
