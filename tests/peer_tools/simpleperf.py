#!/usr/bin/env python3
"""`simpleperf` stand-in for the loopback adbd peer (a test fixture, never product code).

Accepts exactly the options of AOSP simpleperf's `record` option table (system/extras/
simpleperf cmd_record_impl.h / cmd_record.cpp `help record`) and fails like simpleperf on
anything else: "Unknown option for record command" and exit 1, before running the command.
Recording is real: it runs this host's `perf record` underneath (options translated: -f ->
-F, --clockid monotonic -> -k mono, default monotonic), so the samples are this kernel's.
`report-sample --show-callchain` and `report --csv --children --sort dso,symbol` print the
same text formats as simpleperf, computed from `perf script`.

Without --use-cmd-exit-code simpleperf exits 0 when recording worked, whatever the
command's exit code; with it, the command's code passes through.
"""

import os
import signal
import subprocess
import sys
from collections import Counter

# name -> takes a value (OptionValueType != NONE). Recording/ETM/app options are accepted
# and ignored unless translated below.
RECORD_OPTIONS = {
    "-a": False, "--add-meta-info": True, "--add-counter": True, "--addr-filter": True,
    "--app": True, "--aux-buffer-size": True, "-b": False, "--binary": True, "-c": True,
    "--call-graph": True, "--callchain-joiner-min-matching-nodes": True, "--clockid": True,
    "--cpu": True, "--cpu-percent": True, "--cycle-threshold": True, "--decode-etm": False,
    "--delay": True, "--duration": True, "-e": True, "--etm-flush-interval": True,
    "--exclude-perf": False, "--exit-with-parent": False, "-f": True, "-g": False,
    "--group": True, "--in-app": False, "-j": True, "--keep-failed-unwinding-result": False,
    "--keep-failed-unwinding-debug-info": False, "--kprobe": True, "-m": True,
    "--no-callchain-joiner": False, "--no-cut-samples": False,
    "--no-dump-kernel-symbols": False, "--no-dump-symbols": False, "--no-inherit": False,
    "--no-unwind": False, "-o": True, "--out-fd": True, "-p": True, "--post-unwind": False,
    "--post-unwind=no": False, "--post-unwind=yes": False, "--record-cycles": False,
    "--record-timestamp": False, "--size-limit": True, "--start_profiling_fd": True,
    "--stdio-controls-profiling": False, "--stop-signal-fd": True, "--symfs": True,
    "-t": True, "--tp-filter": True, "--trace-offcpu": False, "--tracepoint-events": True,
    "--use-cmd-exit-code": False, "--user-buffer-size": True, "-z": False,
}  # fmt: skip
CLOCKS = {"monotonic": "mono", "monotonic_raw": "raw", "boottime": "boot", "realtime": "real"}
REPORT_SAMPLE_OPTIONS = {"-i": True, "-o": True, "--show-callchain": False}
REPORT_OPTIONS = {"-i": True, "-o": True, "--csv": False, "--children": False, "--sort": True}


def fail(message: str, code: int = 1) -> None:
    sys.stderr.write(f"simpleperf E {message}\n")
    sys.exit(code)


def parse(argv: list[str], table: dict[str, bool], cmd: str, tail: bool) -> tuple[dict, list]:
    """Options as simpleperf's PreprocessOptions reads them; the rest is the command."""
    opts: dict[str, str | bool] = {}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            i += 1
            break
        if not a.startswith("-"):
            break
        if a not in table:
            fail(f"Unknown option for {cmd} command: {a}. Try `simpleperf help {cmd}`.")
        if table[a]:
            if i + 1 >= len(argv):
                fail(f"No argument following {a} option. Try `simpleperf help {cmd}`.")
            opts[a] = argv[i + 1]
            i += 2
        else:
            opts[a] = True
            i += 1
    rest = argv[i:]
    if rest and not tail:
        fail(f"Unknown option for {cmd} command: {rest[0]}. Try `simpleperf help {cmd}`.")
    return opts, rest


def record(argv: list[str]) -> int:
    opts, command = parse(argv, RECORD_OPTIONS, "record", tail=True)
    if not command:
        fail("No monitored targets. Use `simpleperf help record` for usage.")
    clock = CLOCKS.get(str(opts.get("--clockid", "monotonic")))
    if clock is None:
        fail(f"Invalid clockid: {opts['--clockid']}")
    perf = ["perf", "record", "-q", "-k", clock, "-e", str(opts.get("-e", "cpu-cycles"))]
    perf += ["-F", str(opts.get("-f", 4000)), "-o", str(opts.get("-o", "perf.data"))]
    graph = opts.get("--call-graph")
    if graph or opts.get("-g"):
        perf += ["--call-graph", "fp" if graph == "fp" else "dwarf"]
    if opts.get("--no-inherit"):
        perf.append("--no-inherit")
    child = subprocess.Popen([*perf, "--", *command])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda s, _f: child.send_signal(s))
    rc = child.wait()
    rc = 128 - rc if rc < 0 else rc
    return rc if opts.get("--use-cmd-exit-code") else 0


def samples(path: str):
    """(tid, time_ns, period, [(symbol, dso), ...] leaf first) per sample of a perf.data."""
    out = subprocess.run(
        ["perf", "script", "-i", path, "-F", "tid,time,period,ip,sym,dso", "--ns"],
        capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode != 0:
        fail(f"failed to read {path}: {out.stderr.strip()[-200:]}", 1)
    cur = None
    for line in out.stdout.splitlines():
        if not line.strip():
            if cur:
                yield cur
            cur = None
        elif not line.startswith("\t"):  # a sample's header: tid is right-aligned
            f = line.split()
            sec, _, frac = f[1].rstrip(":").partition(".")
            cur = (int(f[0]), int(sec) * 10**9 + int(frac.ljust(9, "0")), int(f[2]), [])
        elif cur is not None:
            f = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else ""
            sym, _, dso = f.rpartition(" (")
            cur[3].append((sym.split("+0x")[0] or "unknown", dso.rstrip(")")))
    if cur:
        yield cur


def report_sample(argv: list[str]) -> int:
    opts, _ = parse(argv, REPORT_SAMPLE_OPTIONS, "report-sample", tail=False)
    lines, n = [], 0
    for tid, t, period, frames in samples(str(opts.get("-i", "perf.data"))):
        n += 1
        leaf = frames[0] if frames else ("unknown", "unknown")
        lines += ["sample:", "  event_type: cpu-clock", f"  time: {t}", f"  event_count: {period}",
                  f"  thread_id: {tid}", "  thread_name: droidoom-helper",
                  f"  file: {leaf[1]}", f"  symbol: {leaf[0]}"]  # fmt: skip
        if opts.get("--show-callchain") and len(frames) > 1:
            lines.append("  callchain:")
            for sym, dso in frames[1:]:
                lines += [f"    file: {dso}", f"    symbol: {sym}"]
    lines += ["lost_situation:", f"  sample_count: {n}", "  lost_count: 0"]
    return _emit(opts, "\n".join(lines) + "\n")


def _emit(opts: dict, text: str) -> int:
    """Write a report to `-o FILE`, else stdout, as simpleperf does."""
    if opts.get("-o"):
        with open(str(opts["-o"]), "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


def report(argv: list[str]) -> int:
    opts, _ = parse(argv, REPORT_OPTIONS, "report", tail=False)
    if opts.get("--sort") not in (None, "dso,symbol") or not opts.get("--csv"):
        fail("this stand-in prints only `--csv --sort dso,symbol`")
    self_c, child_c, total, n = Counter(), Counter(), 0, 0
    for _tid, _t, period, frames in samples(str(opts.get("-i", "perf.data"))):
        n, total = n + 1, total + period
        if frames:
            self_c[frames[0][::-1]] += period
        for key in {fr[::-1] for fr in frames}:
            child_c[key] += period
    rows = [f"Cmdline: simpleperf record\nArch: {os.uname().machine}",
            "Event: cpu-clock (type 1, config 1)", f"Samples: {n}", f"Event count: {total}", "",
            "Children,Self,Shared Object,Symbol,AccEventCount,SelfEventCount,EventName",
            ]  # fmt: skip
    for (dso, sym), acc in child_c.most_common():
        own = self_c.get((dso, sym), 0)
        rows.append(f"{100 * acc / max(total, 1):.2f}%,{100 * own / max(total, 1):.2f}%,"
                    f"{dso},{sym},{acc},{own},cpu-clock")  # fmt: skip
    return _emit(opts, "\n".join(rows) + "\n")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--version"]:
        print("Simpleperf version 1.build.droidoom-peer")
        return 0
    if argv[:2] == ["help", "record"]:
        print("Usage: simpleperf record [options] [--] [command [command-args]]")
        for name, value in sorted(RECORD_OPTIONS.items()):
            print(f"{name}{' <value>' if value else ''}")
        return 0
    commands = {"record": record, "report-sample": report_sample, "report": report}
    if not argv or argv[0] not in commands:
        fail(f"malformed command line: unknown command {argv[:1]}")
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
