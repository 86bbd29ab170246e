"""The capture-source interface the runner drives around one helper run.

Life cycle (the runner's side)::

    why = src.unavailable(target)          # None, or "<name>: <reason>; <fix>"
    src.arm(target, CaptureContext(...))   # set up on the target, change nothing global
    cmd = perf.wrap(ftrace.wrap(cmd))      # perf outermost; innermost is `exec <helper> run ...`
    ... run cmd with target.spawn(cmd, root=src.needs_root) ...
    res = src.collect(target, samples, run_dir, CaptureRunInfo(...))
    src.disarm(target)                     # always (finally); idempotent

"clock" is the helper's own CLOCK_MONOTONIC timing: always on, no source object.
"""

from __future__ import annotations

import re
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:  # typing only: no import of the target modules at run time
    from ..targets.base import Target

#: Below this share of writes matched to their kernel event, a capture's columns describe
#: only part of the run: said loudly (here and in the reports).
MATCHED_LOUD_BELOW = 0.95

#: __NR_write per Android ABI (raw_syscalls report the native syscall number).
NR_WRITE: dict[str, int] = {"x86_64": 1, "arm64-v8a": 64, "armeabi-v7a": 4, "x86": 4}


@dataclass(frozen=True)
class CaptureContext:
    """What a source needs to arm: where to put files on the target and who runs."""

    run_id: str  # run directory id; used to name target-side files and instances
    workdir: str  # writable directory on the target
    abi: str  # Android ABI name of the target (arm64-v8a, x86_64, ...)
    root: bool  # the run can use root (uid 0 or a working su)
    writes: int = 0  # planned writes incl. warmup (0 = unknown); sizes trace buffers


@dataclass(frozen=True)
class CaptureRunInfo:
    """Facts from the helper's stdout that collect() needs to join kernel data."""

    helper_pid: int  # `hello pid=`: the writer thread's tid (main thread)
    targets: dict[int, dict[str, Any]] = field(default_factory=dict)  # tidx -> {kind, pid}

    def pid_of_kind(self) -> dict[str, int]:
        """kind -> target pid for targets that were spawned (pid > 0)."""
        return {
            str(t.get("kind")): int(t.get("pid") or 0)
            for t in self.targets.values()
            if int(t.get("pid") or 0) > 0
        }


@dataclass
class CaptureResult:
    """What collect() returns: samples (maybe with more columns), run.json meta, tables.

    The runner stores `meta` as run.json["captures"][name] and writes every table as
    `<name>.parquet` in the run directory.
    """

    samples: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)


class CaptureSource(ABC):
    """A kernel-side observer of one helper run (ftrace, perf)."""

    name: str = ""
    #: whether the wrapped command must run as root (read after arm(), which may set it).
    needs_root: bool = False
    #: a notice for the run when this capture slows the timed writes themselves (their
    #: latencies then compare only with runs under the same capture), else None.
    slows_writes: str | None = None

    @abstractmethod
    def unavailable(self, target: Target) -> str | None:
        """None if this source can run on `target`, else one line: reason and fix."""

    @abstractmethod
    def arm(self, target: Target, ctx: CaptureContext) -> None:
        """Prepare the target (files, trace instance). Raises CaptureError on failure."""

    @abstractmethod
    def wrap(self, command: str) -> str:
        """Shell command that runs `command` (a shell command, maybe `exec ...`) under
        this capture. Must keep `command`'s stdin/stdout and exit status."""

    @abstractmethod
    def collect(
        self, target: Target, samples: pd.DataFrame, run_dir: Path, info: CaptureRunInfo
    ) -> CaptureResult:
        """Fetch and parse what was captured, join it to `samples`, write raw files
        into `run_dir`. Raises CaptureError when nothing usable was captured."""

    def diagnose(self, stderr: list[str], rc: int | None) -> str | None:
        """When the wrapped command ended before the helper started: this wrapper's own
        failure (its message and exit code, from the command's stderr), or None."""
        return None

    @abstractmethod
    def disarm(self, target: Target) -> None:
        """Restore the target (stop tracing, remove instances/files). Never raises for
        a state that is already clean; safe to call twice or without arm()."""


# --- small shared helpers -----------------------------------------------------------


def q(value: str) -> str:
    """shlex.quote, for building target shell scripts."""
    return shlex.quote(str(value))


def strip_exec(command: str) -> str:
    """`command` without a leading `exec ` (wrappers add their own)."""
    return re.sub(r"^\s*exec\s+", "", command)


def parse_kv_block(text: str, sep: str = "=") -> dict[str, str]:
    """`key<sep>value` lines (as printed by probe scripts) into a dict."""
    out = {}
    for line in text.splitlines():
        k, s, v = line.partition(sep)
        if s:
            out[k.strip()] = v.strip()
    return out
