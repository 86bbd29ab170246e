"""perf / simpleperf capture: where the kernel spends a write, per sweep point and kind.

The whole helper run is sampled with cpu-clock and call stacks, on the monotonic clock
so sample times line up with the helper's CLOCK_MONOTONIC write windows:

    Linux:   perf record -k mono --no-inherit -e cpu-clock -F <rate> -g -o <file> -- sh -c <cmd>
    Android: simpleperf record -e cpu-clock -f <rate> --call-graph fp --no-inherit
             --use-cmd-exit-code -o <file> sh -c <cmd>

simpleperf's options are those of its `help record` table (AOSP system/extras/simpleperf
cmd_record.cpp): its clock option is `--clockid` and already defaults to monotonic, so
none is passed; `--no-inherit` keeps it from opening perf events on every population
thread (only the writer, which `sh -c 'exec ...'` keeps in the same pid, is used);
`--use-cmd-exit-code` (newer releases only: used when `help record` lists it) passes the
helper's exit code through. Without root simpleperf sets `security.perf_harden=0` (init
then writes perf_event_paranoid=1) and never sets it back: disarm() restores both.

(fp call graphs: kernel stacks are unwound by the kernel either way, and dwarf (-g)
copies user stacks into every sample, too heavy at this rate.) Samples of the helper's
writer thread that fall inside a timed write are attributed to that write's point and
kind; the table gives each symbol's self and inclusive (children) share.

perf runs the command as its child and keeps stdin/stdout, so the helper's stdin EOF
watch and stdout liveness check still work; SIGTERM/SIGINT to perf stop the child
and perf exits with the child's status.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..errors import CaptureError
from .base import (
    CaptureContext,
    CaptureResult,
    CaptureRunInfo,
    CaptureSource,
    parse_kv_block,
    q,
)
from .perf_parse import (
    attribute,
    parse_perf_script,
    parse_report_sample,
    parse_simpleperf_report_csv,
    symbol_table,
)

if TYPE_CHECKING:  # typing only: no import of the target modules at run time
    from ..targets.base import Target

DEFAULT_RATE = 20000  # Hz; capped by kernel.perf_event_max_sample_rate
GROUP = ["point", "population", "mode", "kind"]

_PROBE = r"""
echo "uid=$(id -u)"
for t in simpleperf perf; do
  P=$(command -v $t 2>/dev/null)
  [ -z "$P" ] && continue
  V=$($P --version 2>&1); rc=$?
  echo "$t=$P"; echo "${t}_rc=$rc"; echo "${t}_version=$(echo "$V" | head -n 1)"
done
[ -n "$(command -v simpleperf)" ] && echo "simpleperf_opts=$(simpleperf help record 2>&1 \
  | grep -o -e '--no-inherit' -e '--use-cmd-exit-code' | sort -u | tr '\n' ' ')"
echo "perf_harden=$(getprop security.perf_harden 2>/dev/null)"
echo "paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null)"
echo "kptr_restrict=$(cat /proc/sys/kernel/kptr_restrict 2>/dev/null)"
echo "max_rate=$(cat /proc/sys/kernel/perf_event_max_sample_rate 2>/dev/null)"
"""


def _is_android(target: Target) -> bool:
    f = target.facts()
    return f.phone is not None or f.sdk is not None


class PerfSource(CaptureSource):
    """`--capture perf`: adds a perf_symbols table (per point, kind and symbol)."""

    name = "perf"

    def __init__(self, rate: int = DEFAULT_RATE) -> None:
        self.rate = rate
        self._ctx: CaptureContext | None = None
        self._probe: dict[str, str] = {}
        self.android = False
        self.tool: str | None = None
        self._version: str | None = None

    def _run_probe(self, target: Target, root: bool) -> dict[str, str]:
        self._probe = parse_kv_block(target.sh(_PROBE, timeout=30, root=root).stdout)
        return self._probe

    def unavailable(self, target: Target) -> str | None:
        facts = target.facts()
        android = _is_android(target)
        p = self._run_probe(target, facts.root)
        if android:
            if not p.get("simpleperf"):
                return (
                    "perf: simpleperf is not in the shell's PATH (it ships in /system/bin from "
                    "Android 9); push the NDK's simpleperf/bin/android/<arch>/simpleperf to "
                    "/data/local/tmp and add it to PATH, or omit --capture perf"
                )
            if not facts.root:
                return (
                    "perf: kernel symbol names need root on Android (kptr_restrict hides them "
                    "from shell, so the walk would show as bare addresses); run `adb root` on "
                    "a userdebug build, use su, or omit --capture perf"
                )
            return None
        if not p.get("perf") or p.get("perf_rc") != "0" or "perf" not in p.get("perf_version", ""):
            return (
                "perf: `perf` is missing or does not match this kernel; install linux-tools "
                "(or linux-perf) for `uname -r` or omit --capture perf"
            )
        if p.get("uid") != "0":
            paranoid = int(p.get("paranoid") or 2)
            if paranoid > 1:
                return (
                    f"perf: kernel.perf_event_paranoid is {paranoid}, kernel stacks need <= 1; "
                    "run `sudo sysctl kernel.perf_event_paranoid=1`, run as root, "
                    "or omit --capture perf"
                )
            if p.get("kptr_restrict", "0") != "0":
                return (
                    "perf: kernel.kptr_restrict hides kernel symbols from non-root users; "
                    "run `sudo sysctl kernel.kptr_restrict=0`, run as root, or omit --capture perf"
                )
        return None

    def arm(self, target: Target, ctx: CaptureContext) -> None:
        self._ctx = ctx
        self.needs_root = ctx.root
        self.android = _is_android(target)
        p = self._probe or self._run_probe(target, ctx.root)
        name = "simpleperf" if self.android else "perf"
        self.tool = p.get(name) or name
        self._version = p.get(f"{name}_version")
        max_rate = int(p.get("max_rate") or 0)
        if max_rate > 0:
            self.rate = max(100, min(self.rate, max_rate))
        res = target.sh(f"rm -f {q(self._remote('.data'))}", timeout=30, root=ctx.root)
        if not res.ok:
            raise CaptureError(f"perf: cannot write to {ctx.workdir}: {res.stderr.strip()}")

    def _remote(self, suffix: str) -> str:
        if self._ctx is None:
            raise CaptureError("perf: used before arm()")
        return f"{self._ctx.workdir}/perf-{self._ctx.run_id}{suffix}"

    def wrap(self, command: str) -> str:
        data, tool = q(self._remote(".data")), q(self.tool or "perf")
        if self.android:
            opts = self._probe.get("simpleperf_opts", "").split()
            extra = "".join(f" {o}" for o in ("--no-inherit", "--use-cmd-exit-code") if o in opts)
            return (
                f"exec {tool} record -e cpu-clock -f {self.rate} --call-graph fp{extra} "
                f"-o {data} sh -c {q(command)}"
            )
        return (
            f"exec {tool} record -q -k mono --no-inherit -e cpu-clock -F {self.rate} -g "
            f"-o {data} -- sh -c {q(command)}"
        )

    def diagnose(self, stderr: list[str], rc: int | None) -> str | None:
        """Why the wrapped command ended before the helper said hello: perf/simpleperf's
        own message (an unknown option, no permission...) and exit code."""
        tool = Path(self.tool or "perf").name
        lines = [ln.strip() for ln in stderr if ln.strip()]
        if not lines:
            return None
        return f"{tool} failed (exit {rc}) before the helper started: {' | '.join(lines[-3:])}"

    def collect(
        self, target: Target, samples: pd.DataFrame, run_dir: Path, info: CaptureRunInfo
    ) -> CaptureResult:
        assert self._ctx is not None
        run_dir = Path(run_dir)
        data, out = self._remote(".data"), self._remote(".txt")
        tool, root = q(self.tool or "perf"), self._ctx.root
        tables: dict[str, pd.DataFrame] = {}
        meta: dict[str, Any] = {
            "tool": self.tool,
            "version": self._version,
            "event": "cpu-clock",
            "rate_hz": self.rate,
            "clock": "monotonic",
            "helper_pid": info.helper_pid,
        }
        if self.android:
            cmd = f"{tool} report-sample -i {q(data)} --show-callchain > {q(out)}"
        else:
            tid = f" --tid {info.helper_pid}" if info.helper_pid > 0 else ""
            cmd = f"{tool} script -i {q(data)} -F tid,time,ip,sym,dso --ns{tid} > {q(out)}"
        res = target.sh(cmd, timeout=900, root=root)
        if not res.ok:
            raise CaptureError(
                f"perf: `{cmd}` failed: {(res.stderr or res.stdout).strip()[-300:]}; "
                "was the run too short to record anything?"
            )
        warn = [ln for ln in res.stderr.splitlines() if "lost" in ln.lower()]
        if warn:
            meta["warnings"] = warn[-5:]
        local_txt = run_dir / "perf_script.txt"
        target.pull(out, local_txt)
        target.pull(data, run_dir / "perf.data")
        text = local_txt.read_text(errors="replace")
        with local_txt.open("rb") as src, gzip.open(f"{local_txt}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
        local_txt.unlink()
        meta["files"] = ["perf.data", "perf_script.txt.gz"]
        if self.android:
            ps, frames, extra = parse_report_sample(text)
            meta.update(extra)
            tables["perf_report"] = self._android_report(target, data, run_dir, meta)
        else:
            ps, frames = parse_perf_script(text)
        if info.helper_pid > 0:
            ps = ps[ps["tid"] == info.helper_pid]
        group = [c for c in GROUP if c in samples.columns]
        attributed, counts = attribute(ps, samples, group)
        meta["samples"] = counts
        table = symbol_table(attributed, frames, group)
        tables["perf_symbols"] = table.reset_index(drop=True)
        meta["top_self"] = _top(table, group)
        return CaptureResult(samples=samples, meta=meta, tables=tables)

    def _android_report(
        self, target: Target, data: str, run_dir: Path, meta: dict[str, Any]
    ) -> pd.DataFrame:
        """Whole-run `simpleperf report --csv --children` (dso, symbol) as a table."""
        csv = self._remote(".csv")
        cmd = (
            f"{q(self.tool or 'simpleperf')} report -i {q(data)} --csv --children "
            f"--sort dso,symbol -o {q(csv)}"
        )
        if not target.sh(cmd, timeout=600, root=self._ctx.root if self._ctx else False).ok:
            return pd.DataFrame()
        target.pull(csv, run_dir / "perf_report.csv")
        df, rmeta = parse_simpleperf_report_csv((run_dir / "perf_report.csv").read_text())
        meta["report"] = rmeta
        meta["files"].append("perf_report.csv")
        return df

    def disarm(self, target: Target) -> None:
        """Remove the target-side perf files (perf itself ends with the helper) and put
        back perf_event_paranoid / security.perf_harden if the run changed them."""
        if self._ctx is None:
            return
        files = " ".join(q(self._remote(s)) for s in (".data", ".data.old", ".txt", ".csv"))
        script = f"rm -f {files}\n{self._restore_script()}true"
        try:
            target.sh(script, timeout=30, root=self._ctx.root)
        except Exception:  # never mask the run's own outcome; files are only litter
            pass

    def _restore_script(self) -> str:
        """Shell lines that undo simpleperf's `setprop security.perf_harden 0` (init then
        rewrites perf_event_paranoid) and, as root, put perf_event_paranoid back."""
        if not self.android:
            return ""
        out = ""
        harden = self._probe.get("perf_harden", "")
        if harden in ("0", "1"):
            out += (
                f'[ "$(getprop security.perf_harden)" = {harden} ] || '
                f"setprop security.perf_harden {harden}\n"
            )
        paranoid = self._probe.get("paranoid", "")
        if paranoid.lstrip("-").isdigit() and self._ctx is not None and self._ctx.root:
            f = "/proc/sys/kernel/perf_event_paranoid"
            out += f'[ "$(cat {f})" = {paranoid} ] || echo {paranoid} > {f}\n'
        return out


def _top(table: pd.DataFrame, group: list[str]) -> dict[str, dict[str, Any]]:
    """Per group: sample count and the leaf symbol with the largest self share."""
    out = {}
    for key, g in table.groupby(group, observed=True, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        best = g.sort_values("self_pct", ascending=False).iloc[0]
        label = "/".join(str(k) for k in key)
        out[label] = {
            "samples": int(best["group_samples"]),
            "top_self": str(best["symbol"]),
            "top_self_pct": round(float(best["self_pct"]), 1),
        }
    return out
