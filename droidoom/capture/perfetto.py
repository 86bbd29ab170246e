"""perfetto capture: the kernel's own record of every write, without root (Android 10+).

On a production phone the shell user may not touch tracefs, but it may run `perfetto`,
whose privileged `traced_probes` records `oom/oom_score_adj_update` (perfetto's own LMK
docs use that event). droidoom:

1. arm(): starts `perfetto --txt -c - -o /data/misc/perfetto-traces/droidoom-<run>.pftrace
   --background-wait` (`--background` when the build lacks -D), the text config on stdin:
   before Android 12 perfetto cannot read a config file the shell wrote, and the output
   must go to /data/misc/perfetto-traces (SELinux). perfetto prints its pid: ours.
2. the helper runs unchanged (wrap() adds nothing).
3. collect(): SIGTERM to that pid, waits until it has exited (the file is complete only
   then), pulls the trace and parses it on the host with the perfetto wheel's protobuf
   classes (droidoom.traces.perfetto; never TraceProcessor, which downloads a binary).
4. joins the helper's oom events (writer tid = helper pid) to its timed writes: event
   time is BOOTTIME, turned into the helper's CLOCK_MONOTONIC with the trace's clock
   snapshots (the offset fitted to the writes near the snapshots); a write
   matches the event of its target's pid inside [t_ns, t_ns + latency], else a free one
   within a tolerance (capture.trace_match). Adds `trace_offset_ns` (event time
   minus write start) and `trace_adj` to the samples, a `perfetto_validation` table per
   point and kind, and run.json counts (matched fraction, lost events, offsets).

Syscall durations (raw_syscalls) are not recorded: a user build does not let
traced_probes enable them (userdebug only), so kernel_ns needs `--capture ftrace` as root.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from ..errors import CaptureError, DataError
from ..schema import PERFETTO_COLUMNS
from .base import (
    MATCHED_LOUD_BELOW,
    CaptureContext,
    CaptureResult,
    CaptureRunInfo,
    CaptureSource,
    parse_kv_block,
    q,
)
from .trace_match import MATCH_TOL_NS, fit_offset, match_events, wide_offset

if TYPE_CHECKING:  # typing only: no import of the target modules at run time
    from ..targets.base import Target
    from ..traces.perfetto import TraceData

TRACES_DIR = "/data/misc/perfetto-traces"
EVENT = "oom/oom_score_adj_update"
MIN_SDK = 29  # Android 10
BYTES_PER_EVENT = 64  # one FtraceEvent with its oom_score_adj_update, with headroom
MAX_BUFFER_KB = 256 * 1024
DURATION_CAP_MS = 3 * 3600 * 1000  # a perfetto we lost track of stops on its own
STOP_TIMEOUT_S = 60
GROUP = ["point", "population", "mode", "kind"]
I64 = npt.NDArray[np.int64]
NO_SYSCALLS = (
    "syscall durations not recorded: raw_syscalls are userdebug-only for traced_probes; "
    "use --capture ftrace as root for kernel_ns"
)

_PROBE = r"""
P=$(command -v perfetto 2>/dev/null)
echo "perfetto=$P"
if [ -n "$P" ]; then
  perfetto --help 2>&1 | grep -q -- --background-wait && echo bgwait=1
fi
echo "traced=$(getprop init.svc.traced 2>/dev/null)"
echo "traces_dir=$([ -d %s ] && echo 1)"
echo "memavail_kb=$(grep MemAvailable /proc/meminfo | tr -s ' ' | cut -d' ' -f2)"
"""


def trace_config(writes: int, memavail_kb: int = 0) -> str:
    """The text TraceConfig droidoom records with (also shown in the README): a buffer
    for every planned write (and other processes' updates), at most an eighth of the
    phone's available memory."""
    kb = min(MAX_BUFFER_KB, math.ceil(max(writes, 0) * BYTES_PER_EVENT * 1.5 / 1024) + 8192)
    if memavail_kb > 0:
        kb = max(4096, min(kb, memavail_kb // 8))
    return (
        f"buffers {{ size_kb: {kb} fill_policy: DISCARD }}\n"
        "data_sources { config { name: \"linux.ftrace\" ftrace_config {\n"
        f"  ftrace_events: \"{EVENT}\"\n"
        "  buffer_size_kb: 4096 drain_period_ms: 250 } } }\n"
        "data_sources { config { name: \"linux.process_stats\"\n"
        "  process_stats_config { scan_all_processes_on_start: true } } }\n"
        f"duration_ms: {DURATION_CAP_MS}\n"
    )


class PerfettoSource(CaptureSource):
    """`--capture perfetto`: adds trace_offset_ns / trace_adj to every timed write."""

    name = "perfetto"
    needs_root = False

    def __init__(self) -> None:
        self._ctx: CaptureContext | None = None
        self._probe: dict[str, str] = {}
        self.pid: int | None = None
        self.remote: str | None = None
        self._meta: dict[str, Any] = {}

    def unavailable(self, target: Target) -> str | None:
        facts = target.facts()
        if facts.sdk is not None and facts.sdk < MIN_SDK:  # only Android reports an SDK
            return (
                f"perfetto: Android API {facts.sdk} < 29: perfetto cannot record "
                f"{EVENT} for the shell before Android 10; use --capture ftrace on a "
                "rooted/userdebug build"
            )
        self._probe = parse_kv_block(target.sh(_PROBE % TRACES_DIR, timeout=30).stdout)
        p = self._probe
        if not p.get("perfetto"):
            return "perfetto: no `perfetto` command on the target (Android 9+ ships it)"
        if p.get("traced") and p.get("traced") != "running":
            return (
                f"perfetto: the traced service is {p['traced']}; run "
                "`adb shell setprop persist.traced.enable 1` (Android 9/10) and retry"
            )
        if p.get("traces_dir") != "1":
            return f"perfetto: {TRACES_DIR} is missing (not an Android build with perfetto?)"
        return None

    def arm(self, target: Target, ctx: CaptureContext) -> None:
        self._ctx = ctx
        p = self._probe or parse_kv_block(target.sh(_PROBE % TRACES_DIR, timeout=30).stdout)
        flag = "--background-wait" if p.get("bgwait") == "1" else "--background"
        self.remote = f"{TRACES_DIR}/droidoom-{ctx.run_id}.pftrace"
        config = trace_config(ctx.writes, int(p.get("memavail_kb") or 0))
        cmd = (
            f"rm -f {q(self.remote)}; printf %s {q(config)} | "
            f"perfetto --txt -c - -o {q(self.remote)} {flag}"
        )
        if flag == "--background":  # returns before the data sources run: give them time
            cmd = f"{cmd} && sleep 1"
        res = target.sh(cmd, timeout=60)
        pids = [w for w in res.stdout.split() if w.isdigit()]
        if not res.ok or not pids:
            target.sh(f"rm -f {q(self.remote)}", timeout=30)  # perfetto may have created it
            self.remote = None
            raise CaptureError(
                f"perfetto: could not start tracing (exit {res.exit_code}): "
                f"{(res.stderr or res.stdout).strip()[-400:]}; is traced running "
                "(`adb shell setprop persist.traced.enable 1`)? Or omit --capture perfetto"
            )
        self.pid = int(pids[-1])
        self._meta = {"config": config, "flag": flag, "perfetto_pid": self.pid,
                      "trace_file": self.remote, "syscall_durations": NO_SYSCALLS}  # fmt: skip

    def wrap(self, command: str) -> str:
        return command  # perfetto records system-wide; the helper runs as it is

    def _stop(self, target: Target) -> str:
        """SIGTERM our perfetto and wait until it exits; '' or what went wrong."""
        if self.pid is None or self.pid <= 0:
            return "not started"
        pid, mark = self.pid, q(f"droidoom-{self._ctx.run_id if self._ctx else ''}.pftrace")
        # Signal it only while it is still our perfetto (its cmdline names our trace
        # file): once it has exited on its own, the pid may belong to someone else.
        # A zombie's cmdline is empty, so "ours" also ends when it has exited.
        ours = f"tr '\\0' ' ' < /proc/{pid}/cmdline 2>/dev/null | grep -qF -- {mark}"
        script = (
            f"{ours} || {{ echo gone; exit 0; }}\n"
            f"kill -TERM {pid} 2>/dev/null || {{ echo gone; exit 0; }}\n"
            f"i=0; while {ours}; do\n"
            f"  i=$((i+1)); [ $i -gt {STOP_TIMEOUT_S * 20} ] && {{ echo timeout; exit 1; }}\n"
            "  sleep 0.05\ndone; echo stopped\n"
        )
        res = target.sh(script, timeout=STOP_TIMEOUT_S + 30)
        self.pid = None
        if "stopped" in res.stdout:
            return ""
        return res.stdout.strip() or res.stderr.strip() or f"exit {res.exit_code}"

    def collect(
        self, target: Target, samples: pd.DataFrame, run_dir: Path, info: CaptureRunInfo
    ) -> CaptureResult:
        from ..traces.perfetto import read_trace

        if self.remote is None:
            raise CaptureError("perfetto: collect() before arm()")
        why = self._stop(target)
        if why and why != "gone":
            raise CaptureError(f"perfetto: could not stop perfetto pid: {why}")
        local = Path(run_dir) / "trace.pftrace"
        target.pull(self.remote, local)
        try:
            trace = read_trace(local)
        except DataError as e:
            raise CaptureError(f"perfetto: {e}") from None
        if why == "gone":
            self._meta["note"] = "perfetto had exited before the run ended (duration cap?)"
        joined, stats, val = join_trace(samples, trace, info)
        meta = {**self._meta, "trace": trace.summary(), "files": ["trace.pftrace"], **stats}
        if stats["writes_before_trace"]:
            meta["warning"] = (
                f"perfetto's data sources started after the run's first "
                f"{stats['writes_before_trace']} writes, which are not in the trace "
                f"(`{self._meta.get('flag')}` returned before tracing began); "
                "matched_fraction counts the writes after that moment"
            )
        if trace.losses:
            lost = (
                f"the trace lost events ({trace.loss_text()}); unmatched writes may have "
                "had one. Use fewer writes per run (--writes) or a phone with more free memory"
            )
            meta["warning"] = f"{meta['warning']}; {lost}" if meta.get("warning") else lost
        frac = stats["matched_fraction"]
        if frac is not None and frac < MATCHED_LOUD_BELOW:
            low = (f"ONLY {frac:.1%} OF THE WRITES MATCHED THEIR KERNEL EVENT (clock offset: "
                   f"{stats['clock']}): trace_offset_ns and trace_adj cover part of the "
                   "run")  # fmt: skip
            meta["warning"] = f"{low}; {meta['warning']}" if meta.get("warning") else low
        mine = trace.oom_events
        if info.helper_pid > 0:
            mine = mine[mine["writer_tid"] == info.helper_pid]
        tables = {"perfetto_events": mine.reset_index(drop=True), "perfetto_validation": val}
        return CaptureResult(samples=joined, meta=meta, tables=tables)

    def disarm(self, target: Target) -> None:
        """Stop our perfetto if it still runs (only the pid it printed) and delete the
        target-side trace file."""
        try:
            if self.pid is not None:
                self._stop(target)
            if self.remote:
                target.sh(f"rm -f {q(self.remote)}", timeout=30)
                self.remote = None
        except Exception as e:  # never mask the run's own outcome
            warnings.warn(f"perfetto: disarm failed: {e}", stacklevel=2)


def _expected_pids(samples: pd.DataFrame, info: CaptureRunInfo) -> np.ndarray:
    if "target" in samples.columns:
        m = {int(k): int(v.get("pid") or 0) for k, v in info.targets.items()}
        s = samples["target"].astype(int).map(m)
    else:
        s = samples["kind"].astype(str).map(info.pid_of_kind())
    return s.fillna(0).to_numpy(np.int64)


@dataclass(frozen=True)
class _Clock:
    """The trace-to-helper clock: boot - monotonic offset used, the snapshots' own offset
    and spread, the matching tolerance, and how it was found (run.json's `clock`)."""

    off: int
    snapshot_off: int
    spread: int
    tol: int
    how: str
    source: str = "clock snapshot"  # or "matched writes", "none"

    def stats(self) -> dict[str, Any]:
        """run.json's clock entries."""
        return {"clock": self.how, "clock_source": self.source, "boot_minus_mono_ns": self.off,
                "snapshot_boot_minus_mono_ns": self.snapshot_off,
                "snapshot_error_ns": self.snapshot_off - self.off,
                "snapshot_spread_ns": self.spread, "tolerance_ns": self.tol}  # fmt: skip


def _clock(trace: TraceData, e_ts: I64, e_pid: I64, t: I64, lat: I64, want: I64) -> _Clock:
    """The snapshots' offset, moved to fit the writes (`fit_offset`); without snapshots
    the trace clock is taken as CLOCK_MONOTONIC."""
    off = trace.clock_offset_ns()
    if off is None:
        return _Clock(0, 0, 0, MATCH_TOL_NS, "none: assumed trace clock = CLOCK_MONOTONIC",
                      "none")  # fmt: skip
    d = (trace.clocks["boottime"] - trace.clocks["monotonic"]).dropna().astype(np.int64)
    spread = int(d.max() - d.min()) if len(d) else 0
    how = "boottime->monotonic from clock snapshots"
    fitted = fit_offset(e_ts, e_pid, t, lat, want, d.tolist())
    if fitted is None:  # nothing to fit: the tolerance covers the snapshots' spread
        return _Clock(off, off, spread, MATCH_TOL_NS + min(spread, 1_000_000), how)
    if fitted != off:
        how += f", moved {fitted - off:+d} ns to fit the writes"
    return _Clock(fitted, off, spread, MATCH_TOL_NS, how)


def _wide_clock(
    clk: _Clock, e_ts: I64, e_pid: I64, e_adj: I64, t: I64, lat: I64, want: I64, adj: I64
) -> _Clock | None:
    """The offset pinned by the writes themselves (`wide_offset`: their targets' pids and
    the adjs written, in order), searched milliseconds around the snapshots' one; None
    when it finds none."""
    found = wide_offset(e_ts, e_pid, e_adj, t, lat, want, adj, clk.snapshot_off)
    if found is None:
        return None
    off = found[1]
    how = (f"matched writes: the clock snapshot was off by {(clk.snapshot_off - off) / 1e3:+.1f}"
           " us, the offset was found from the writes' pid and adj sequence")  # fmt: skip
    if clk.source == "none":
        how = "matched writes: no clock snapshot, the offset was found near 0 from the writes"
    return _Clock(off, clk.snapshot_off, clk.spread, MATCH_TOL_NS, how, "matched writes")


def join_trace(
    samples: pd.DataFrame, trace: TraceData, info: CaptureRunInfo
) -> tuple[pd.DataFrame, dict[str, Any], pd.DataFrame]:
    """(samples + PERFETTO_COLUMNS, run.json stats, per-point validation table).

    Events of the helper's writer thread are put in CLOCK_MONOTONIC with an offset fitted
    near the clock snapshots (`_clock`), then paired one to one with the writes by the
    target's pid (`match_events`; a different adj is counted, not dropped). Unmatched
    writes from before the trace's data sources started are counted apart
    (`writes_before_trace`) and left out of matched_fraction."""
    ev = trace.oom_events
    if info.helper_pid > 0:
        ev = ev[ev["writer_tid"] == info.helper_pid]
    raw_ts = ev["ts_ns"].to_numpy(np.int64)
    e_pid = ev["pid"].to_numpy(np.int64)
    e_adj = ev["adj"].to_numpy(np.int64)
    t = samples["t_ns"].to_numpy(np.int64)
    lat = samples["latency_ns"].to_numpy(np.int64)
    adj = samples["adj_to"].to_numpy(np.int64)
    ok = samples["err"].to_numpy() == 0 if "err" in samples else np.ones(len(t), bool)
    want = _expected_pids(samples, info)
    clk = _clock(trace, raw_ts, e_pid, t[ok], lat[ok], want[ok])
    idx, pid_mismatch = match_events(raw_ts - clk.off, e_pid, e_adj, t, lat, want, adj, ok,
                                     clk.tol)  # fmt: skip
    if (ok & (idx < 0)).any() and len(raw_ts):
        # Writes left without their event: the snapshot may be off by more than the
        # writes' spacing (its reader preempted). The writes pin the offset themselves.
        wide = _wide_clock(clk, raw_ts, e_pid, e_adj, t[ok], lat[ok], want[ok], adj[ok])
        if wide is not None and wide.off != clk.off:
            idx2, mm2 = match_events(raw_ts - wide.off, e_pid, e_adj, t, lat, want, adj, ok,
                                     wide.tol)  # fmt: skip
            if (idx2 >= 0).sum() > (idx >= 0).sum():
                clk, idx, pid_mismatch = wide, idx2, mm2
    off = clk.off
    e_ts = raw_ts - off
    matched = idx >= 0
    # Writes that began before traced's data sources had started cannot be in the trace
    # (`--background` returns early): counted apart, not as misses.
    before = np.zeros(len(t), bool)
    if trace.sources_started_ns is not None:
        before = ~matched & (t < trace.sources_started_ns - off)
    traced = ok & ~before
    offset = np.where(matched, e_ts[idx] - t, np.nan) if len(e_ts) else np.full(len(t), np.nan)
    kadj = np.where(matched, e_adj[idx], np.nan) if len(e_ts) else np.full(len(t), np.nan)
    n_ev = len(e_ts)
    out = samples.copy()
    out["trace_offset_ns"] = pd.array(np.round(offset), dtype="Float64").astype("Int64")
    out["trace_adj"] = pd.array(kadj, dtype="Float64").astype("Int16")
    out = out.astype(PERFETTO_COLUMNS)
    inside = matched & (offset >= 0) & (offset <= lat)
    stats = {
        **clk.stats(),
        "helper_oom_events": int(n_ev),
        "writes": int(len(t)),
        "writes_ok": int(ok.sum()),
        "matched": int(matched.sum()),
        "matched_fraction": float(matched[traced].mean()) if traced.any() else None,
        "writes_before_trace": int((ok & before).sum()),
        "inside_write_fraction": float(inside[matched].mean()) if matched.any() else None,
        "adj_mismatch": int((matched & (kadj != adj)).sum()),
        "pid_mismatch": pid_mismatch,
        "oom_events_outside_samples": int(n_ev - matched.sum()),  # warmups, errored writes
        "lost_events": trace.losses,
        "offset_median_ns": float(np.median(offset[matched])) if matched.any() else None,
    }
    return out, stats, validation(out, traced=~before)


def validation(samples: pd.DataFrame, traced: np.ndarray | None = None) -> pd.DataFrame:
    """Per sweep point and kind: writes, matched fraction (of the `traced` writes: those
    after the trace's data sources started), and the event-to-write offset (median, p95)
    and the fraction of events inside their write's window."""
    keys = [c for c in GROUP if c in samples.columns]
    off = samples["trace_offset_ns"].astype("Float64").astype(float)
    lat = samples["latency_ns"].astype(float)
    ok = samples["err"] == 0 if "err" in samples else pd.Series(True, index=samples.index)
    if traced is not None:
        ok = ok & traced
    df = samples[keys].copy()
    df["ok"] = ok.astype(float)
    df["matched"] = (off.notna() & ok).astype(float)
    df["offset_ns"] = off
    df["inside"] = ((off >= 0) & (off <= lat)).astype(float).where(off.notna())
    g = df.groupby(keys, observed=True, sort=True)
    out = pd.DataFrame({
        "writes": g.size(),
        "matched_fraction": g["matched"].sum() / g["ok"].sum().where(lambda x: x > 0),
        "offset_median_ns": g["offset_ns"].median(),
        "offset_p95_ns": g["offset_ns"].quantile(0.95),
        "inside_write_fraction": g["inside"].mean(),
    })  # fmt: skip
    return out.reset_index()
