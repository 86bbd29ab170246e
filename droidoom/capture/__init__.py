"""Kernel-side capture sources for `droidoom profile --capture clock,ftrace,perf`.

See base.py for the life cycle the runner drives; ftrace.py and perf.py for what each
source records and adds to a run.
"""

from __future__ import annotations

from .base import (
    NR_WRITE,
    SOURCE_NAMES,
    CaptureContext,
    CaptureResult,
    CaptureRunInfo,
    CaptureSource,
    build_sources,
)
from .ftrace_join import validation_table

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
