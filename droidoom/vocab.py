"""One vocabulary: the statuses and classes droidoom writes into run.json, farm.json and
its tables, plus the timestamp and slug every module shares.

Every enum is a `StrEnum`: a member compares equal to its value, formats and serialises
(JSON, CSV, parquet) as that value, so files stay exactly as before.
"""

from __future__ import annotations

import datetime as dt
import re
from enum import StrEnum

#: Target kinds, in display order. See device_scripts/PROTOCOL.md.
KINDS: tuple[str, ...] = ("single", "threaded", "multiprocess")

#: Write modes: lmkd's open+write+close per update, or one persistent fd.
MODES: tuple[str, ...] = ("reopen", "persistent")


class RunStatus(StrEnum):
    """run.json `status` of one profile run."""

    RUNNING = "running"  # still going, or its host died (readers treat it as partial)
    COMPLETE = "complete"
    PARTIAL = "partial"  # ended early; the records gathered so far are kept
    FAILED = "failed"  # an error that is not the target's; run.json says which


class DeviceStatus(StrEnum):
    """Outcome of one device in a farm run."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETE = "complete"
    PARTIAL = "partial"  # some samples; the run ended early
    FAILED = "failed"  # no usable samples
    CANCELLED = "cancelled"  # the farm was stopped before or during this device's run


class FarmStatus(StrEnum):
    """farm.json `status` of a whole farm run."""

    RUNNING = "running"
    COMPLETE = "complete"  # every device complete
    PARTIAL = "partial"
    INTERRUPTED = "interrupted"  # Ctrl-C (or a signal) stopped it


class VerdictStatus(StrEnum):
    """Whether a kernel has the 2020 oom_score_adj regression (see droidoom.analysis.verdicts)."""

    FIXED = "fixed"
    REGRESSED = "regressed"
    INCONCLUSIVE = "inconclusive"


class Complexity(StrEnum):
    """How write latency scales with the number of processes."""

    O1 = "O(1)"
    ON = "O(N)"
    INCONCLUSIVE = "inconclusive"


def now() -> str:
    """This moment in UTC, ISO 8601 with milliseconds (the timestamps of run.json and
    farm.json)."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def slug(text: str, empty: str = "device") -> str:
    """`text` safe in a file name: runs of other characters than letters, digits, `_`,
    `.` and `-` become `_`; `empty` when nothing is left."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or empty
