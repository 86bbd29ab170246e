"""ftrace capture: kernel timestamps of every oom_score_adj write of the helper.

Everything happens in a private tracefs instance (instances/droidoom-<run id>): its
own buffer, clock, events, pid filter and options, so the top-level tracing state that
other tools (atrace, perfetto, trace-cmd) use is never touched. The only top-level
change is mounting tracefs when no tracefs is mounted at all; disarm unmounts it again.

Nanosecond timestamps: the text `trace` file prints ns clocks as sec.usec, too coarse
for a ~0.4 us write. With options/raw the same file prints `<pid> <cpu> <ts_ns>
type: <id>` per event but no fields. Because the buffer is stopped, two reads walk the
same events in the same order, so collect() reads `trace` twice (text, then raw) and
zips them, checking pid, cpu and the microsecond of every pair (ftrace_parse). That
needs no knowledge of the binary ring-buffer page layout (trace_pipe_raw), which varies
across kernels (time extends, absolute timestamps, sub-buffer sizes); if the check ever
fails, the text's microseconds are kept and run.json says ts_precision="us".
"""

from __future__ import annotations

import gzip
import math
import re
import shutil
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import CaptureError
from ..traces.ftrace_text import (
    add_write_fields,
    parse_cpu_stats,
    parse_raw,
    parse_trace,
    require_events,
    with_ns_timestamps,
)
from .base import (
    NR_WRITE,
    CaptureContext,
    CaptureResult,
    CaptureRunInfo,
    CaptureSource,
    parse_kv_block,
    q,
    strip_exec,
)
from .ftrace_join import (
    estimate_clock_offset,
    join_writes,
    kernel_writes,
    overhead_by_group,
    validation_table,
)

if TYPE_CHECKING:  # typing only: no import of the target modules at run time
    from ..targets.base import Target

OOM_EVENT = "oom:oom_score_adj_update"
SYSCALL_EVENTS = ("raw_syscalls:sys_enter", "raw_syscalls:sys_exit")
#: Ring-buffer bytes per traced write: sys_enter (~72) + oom event (~36) + sys_exit (~28),
#: rounded up for page headers and the helper's own stdout/record writes.
BYTES_PER_WRITE = 160
DEFAULT_BUFFER_KB = 16384  # per CPU, when the runner does not say how many writes
MIN_BUFFER_KB = 4096

#: Where tracefs is mounted: its own mount point (4.1+), else under debugfs.
TRACEFS_ROOTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


def instance_name(run_id: str) -> str:
    """The private tracefs instance of run `run_id` (leftovers removes a killed run's)."""
    return "droidoom-" + re.sub(r"[^A-Za-z0-9_.-]", "_", run_id)[:80]


_PROBE = r"""
T=
for d in TRACEFS_ROOTS; do
  if [ -e "$d/available_events" ]; then T=$d; break; fi
done
echo "tracefs=$T"
grep -qw tracefs /proc/filesystems 2>/dev/null && echo fs=1
if [ -n "$T" ]; then
  echo "clocks=$(cat "$T/trace_clock" 2>/dev/null)"
  [ -d "$T/instances" ] && echo instances=1
  echo "droidoom_instances=$(ls "$T/instances" 2>/dev/null | grep '^droidoom-' | tr '\n' ' ')"
  for e in %s; do grep -qx "$e" "$T/available_events" 2>/dev/null && echo "event_$e=1"; done
fi
echo "memavail_kb=$(grep MemAvailable /proc/meminfo | tr -s ' ' | cut -d' ' -f2)"
echo "ncpus=$(ls -d /sys/devices/system/cpu/cpu[0-9]* | wc -l)"
""".replace("TRACEFS_ROOTS", " ".join(TRACEFS_ROOTS))


def _clocks(line: str) -> list[str]:
    return [c.strip("[]") for c in line.split()]


class FtraceSource(CaptureSource):
    """`--capture ftrace`: adds kernel_ns / kernel_adj to every timed write."""

    name = "ftrace"
    needs_root = True
    slows_writes = (
        "ftrace traces every write syscall, which slows the writes themselves: "
        "compare these latencies only with other --capture ftrace runs"
    )

    def __init__(self) -> None:
        self._ctx: CaptureContext | None = None
        self._probe: dict[str, str] = {}
        self.tracefs: str | None = None
        self.instance: str | None = None
        self._mounted = False
        self._arm_meta: dict[str, Any] = {}

    # --- availability -----------------------------------------------------------------

    def _run_probe(self, target: Target) -> dict[str, str]:
        events = " ".join((OOM_EVENT, *SYSCALL_EVENTS))
        res = target.sh(_PROBE % events, timeout=30, root=True)
        self._probe = parse_kv_block(res.stdout)
        return self._probe

    def unavailable(self, target: Target) -> str | None:
        if not target.facts().root:
            return (
                "ftrace: tracefs needs root; run on a rooted/userdebug build (adb root) "
                "or as root on a Linux host, or omit --capture ftrace"
            )
        p = self._run_probe(target)
        if not p.get("tracefs") and p.get("fs") != "1":
            return "ftrace: this kernel has no tracefs (CONFIG_FTRACE off); omit --capture ftrace"
        if not p.get("tracefs"):
            return None  # arm() mounts it
        if p.get("instances") != "1":
            return "ftrace: tracefs has no instances/ (kernel < 4.4); omit --capture ftrace"
        if p.get(f"event_{OOM_EVENT}") != "1":
            return (
                f"ftrace: event {OOM_EVENT} is not in available_events (kernel < 4.2 or "
                "tracepoint compiled out); omit --capture ftrace"
            )
        clocks = _clocks(p.get("clocks", ""))
        if "mono" not in clocks and "boot" not in clocks:
            return (
                "ftrace: trace_clock offers neither mono nor boot, so events cannot be "
                "aligned with the helper's CLOCK_MONOTONIC; omit --capture ftrace"
            )
        return None

    # --- arm / wrap -------------------------------------------------------------------

    def _mount_probe(self, target: Target) -> tuple[dict[str, str], str]:
        """The probe's facts and the tracefs path, mounting tracefs when it is not."""
        p = self._probe or self._run_probe(target)  # unavailable() just probed: reuse it
        tracefs = p.get("tracefs")
        if not tracefs:
            res = target.sh("mount -t tracefs nodev /sys/kernel/tracing", timeout=30, root=True)
            if not res.ok:
                raise CaptureError(
                    f"ftrace: cannot mount tracefs ({(res.stderr or res.stdout).strip()}); "
                    "mount it yourself or omit --capture ftrace"
                )
            self._mounted = True
            p = self._run_probe(target)
            tracefs = p.get("tracefs")
            if not tracefs:
                raise CaptureError("ftrace: mounted tracefs but found no available_events")
        return p, tracefs

    def arm(self, target: Target, ctx: CaptureContext) -> None:
        self._ctx = ctx
        p, tracefs = self._mount_probe(target)
        self.tracefs = tracefs
        clocks = _clocks(p.get("clocks", ""))
        clock = "mono" if "mono" in clocks else "boot"
        have_sys = all(p.get(f"event_{e}") == "1" for e in SYSCALL_EVENTS)
        kb = self._buffer_kb(ctx.writes, int(p.get("memavail_kb") or 0), int(p.get("ncpus") or 1))
        self.instance = f"{tracefs}/instances/{instance_name(ctx.run_id)}"
        nr = NR_WRITE.get(ctx.abi)
        steps = [
            ("create the instance", f"mkdir {q(self.instance)}"),
            ("cd into it", f"cd {q(self.instance)}"),
            ("stop it", "echo 0 > tracing_on"),
            (f"set trace_clock {clock}", f"echo {clock} > trace_clock"),
            (f"set buffer_size_kb {kb}", f"echo {kb} > buffer_size_kb"),
            # keep the oldest events when full; losses show up as "dropped events"
            ("clear options/overwrite", "echo 0 > options/overwrite"),
            ("enable the oom event", "echo 1 > events/oom/oom_score_adj_update/enable"),
        ]
        if have_sys:
            for ev in ("sys_enter", "sys_exit"):
                d = f"events/raw_syscalls/{ev}"
                if nr is not None:
                    steps.append((f"filter {ev}", f"echo {q(f'id == {nr}')} > {d}/filter"))
                steps.append((f"enable {ev}", f"echo 1 > {d}/enable"))
        script = "\n".join(
            f"{cmd} || {{ echo {q('failed: ' + what)} >&2; exit 1; }}" for what, cmd in steps
        )
        res = target.sh(script, timeout=60, root=True)
        if not res.ok:
            if "failed: create the instance" in res.stderr:
                self.instance = None  # not ours (a stale or concurrent run): leave it
            self.disarm(target)
            raise CaptureError(
                f"ftrace: could not arm {self.instance}: {(res.stderr or res.stdout).strip()}; "
                "SELinux or a locked-down kernel may forbid it; omit --capture ftrace"
            )
        self._arm_meta = {
            "tracefs": tracefs,
            "instance": self.instance,
            "mounted_tracefs": self._mounted,
            "trace_clock": clock,
            "buffer_size_kb": kb,
            "nr_write": nr,
            "events": [OOM_EVENT, *(SYSCALL_EVENTS if have_sys else ())],
            "missing_events": [] if have_sys else list(SYSCALL_EVENTS),
            # left by runs that were killed before disarm (or running now): not touched
            "other_droidoom_instances": p.get("droidoom_instances", "").split(),
        }
        if not have_sys:
            self._arm_meta["note"] = "raw_syscalls missing: kernel_adj only, kernel_ns stays NA"

    @staticmethod
    def _buffer_kb(writes: int, memavail_kb: int, ncpus: int) -> int:
        """Per-CPU buffer: all events may land on one CPU, so each holds the whole run;
        never more than a quarter of available memory over all CPUs."""
        if writes > 0:
            kb = math.ceil(writes * BYTES_PER_WRITE * 1.5 / 1024) + 1024
        else:
            kb = DEFAULT_BUFFER_KB
        kb = max(kb, MIN_BUFFER_KB)
        if memavail_kb > 0:
            kb = min(kb, max(MIN_BUFFER_KB, memavail_kb // (4 * max(ncpus, 1))))
        return int(kb)

    def wrap(self, command: str) -> str:
        if self.instance is None:
            raise CaptureError("ftrace: wrap() before arm()")
        inst = q(self.instance)
        # $$ is the shell that execs the helper, so the filter holds its pid before the
        # first write; tracing starts only now (the instance was armed stopped).
        return (
            f"echo $$ > {inst}/set_event_pid && echo 1 > {inst}/tracing_on && "
            f"exec {strip_exec(command)}"
        )

    # --- collect ----------------------------------------------------------------------

    def _remote(self, suffix: str) -> str:
        assert self._ctx is not None
        return f"{self._ctx.workdir}/ftrace-{self._ctx.run_id}{suffix}"

    def collect(
        self, target: Target, samples: pd.DataFrame, run_dir: Path, info: CaptureRunInfo
    ) -> CaptureResult:
        if self.instance is None or self._ctx is None:
            raise CaptureError("ftrace: collect() before arm()")
        inst, txt, raw = q(self.instance), q(self._remote(".txt")), q(self._remote(".raw.txt"))
        script = (
            f"cd {inst} || exit 1\necho 0 > tracing_on\n"
            f"cat trace > {txt} || exit 1\n"
            f"echo 1 > options/raw && cat trace > {raw}; echo 0 > options/raw\n"
            'for c in per_cpu/cpu*; do echo "== ${c##*/}"; cat "$c/stats"; done\n'
        )
        res = target.sh(script, timeout=600, root=True)
        if not res.ok:
            raise CaptureError(
                f"ftrace: reading {self.instance}/trace failed: {res.stderr.strip()}"
            )
        run_dir = Path(run_dir)
        local_txt, local_raw = run_dir / "ftrace.txt", run_dir / "ftrace_raw.txt"
        try:
            target.pull(self._remote(".txt"), local_txt)
            target.pull(self._remote(".raw.txt"), local_raw)
            text = local_txt.read_text(errors="replace")
            raw_text = local_raw.read_text(errors="replace")
        finally:
            target.sh(f"rm -f {txt} {raw}", timeout=30, root=True)
        events, header = parse_trace(text)
        require_events(events, f"{self.instance}/trace")
        events, precision = with_ns_timestamps(events, parse_raw(raw_text))
        for f in (local_txt, local_raw):  # keep the evidence, compressed
            with f.open("rb") as src, gzip.open(f"{f}.gz", "wb") as dst:
                shutil.copyfileobj(src, dst)
            f.unlink()
        events = add_write_fields(events)
        cpu_stats = parse_cpu_stats(res.stdout)
        kw = kernel_writes(events, info.helper_pid, self._arm_meta.get("nr_write"))
        offset = 0
        if self._arm_meta.get("trace_clock") != "mono":
            offset = estimate_clock_offset(samples, kw) or 0
        joined, stats = join_writes(samples, kw, info, clock_offset_ns=offset)
        mine = events[events["pid"] == info.helper_pid] if info.helper_pid > 0 else events
        val = validation_table(joined)
        meta = {
            **self._arm_meta,
            "ts_precision": precision,
            "clock_offset_ns": offset,
            "helper_pid": info.helper_pid,
            "events_in_trace": int(len(events)),
            "helper_events": int(len(mine)),
            **header.as_dict(),
            "overrun": sum(s.get("overrun", 0) for s in cpu_stats.values()),
            "dropped_events": sum(s.get("dropped_events", 0) for s in cpu_stats.values()),
            "cpu_stats": {str(k): v for k, v in cpu_stats.items()},
            **stats,
            "overhead_median_ns": overhead_by_group(val),
            "files": ["ftrace.txt.gz", "ftrace_raw.txt.gz"],
        }
        tables = {"ftrace_events": mine.reset_index(drop=True), "ftrace_validation": val}
        return CaptureResult(samples=joined, meta=meta, tables=tables)

    # --- disarm -----------------------------------------------------------------------

    def disarm(self, target: Target) -> None:
        """Stop and remove the instance (and unmount tracefs if arm() mounted it)."""
        self._probe = {}  # a next arm() probes afresh
        lines = []
        if self._ctx is not None:
            lines.append(f"rm -f {q(self._remote('.txt'))} {q(self._remote('.raw.txt'))}")
        if self.instance:
            i = q(self.instance)
            lines.append(
                f"if [ -d {i} ]; then echo 0 > {i}/tracing_on; echo > {i}/set_event_pid; "
                f"echo 0 > {i}/events/enable; "
                f"rmdir {i} 2>/dev/null || {{ sleep 1; rmdir {i}; }} || echo instance_left; fi"
            )
        if self._mounted and self.tracefs:
            lines.append(f"umount {q(self.tracefs)} && echo unmounted")
        if not lines:
            return
        try:
            res = target.sh("\n".join(lines), timeout=60, root=True)
        except Exception as e:  # never mask the run's own outcome
            warnings.warn(f"ftrace: disarm failed: {e}", stacklevel=2)
            return
        if "instance_left" in res.stdout:
            warnings.warn(
                f"ftrace: could not remove {self.instance} ({res.stderr.strip()}); "
                f"remove it with `rmdir {self.instance}` as root",
                stacklevel=2,
            )
            return
        if "unmounted" in res.stdout:
            self._mounted = False
        self.instance = None
