"""Trace reading benchmark: oom_score_adj updates per second, Perfetto protobuf and ftrace text.

    PYTHONPATH=. python benchmarks/bench_reading.py [--updates 1000000] [--repeat 3]
                                       [--profile] [--traces DIR] [--json out.json]

Makes a Perfetto trace of about `--updates` oom_score_adj updates with
droidoom.traces.synth (a phone in heavy use: a launch and a service change every 0.5 s on
average, so the churn of hours; 1000 updates per FtraceEventBundle, as traced_probes
writes them) and an ftrace text file (the `trace` file's layout, header included) of the
same updates, one line each. Both are read with `droidoom.traces.perfetto.read_any`, the
reader `cost`, `--scenario replay:` and `--capture perfetto` use (format sniffing, the
per-event walk, the DataFrame build, the value checks), `--repeat` times each; reported:
median wall time, updates per second and MB per second. `--profile` prints the top of a
cProfile of one read of each. `--traces DIR` keeps the two files in DIR (made once, then
reused: e.g. to read them with another checkout on PYTHONPATH, in turn, on a busy host).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import tempfile
import time
from pathlib import Path

from droidoom.traces.perfetto import read_any
from droidoom.traces.synth import SynthSpec, generate

UPDATES_PER_S = 29328 / 600  # measured rate of the heavy-use spec below (updates / s)

HEADER = """# tracer: nop
#
# entries-in-buffer/entries-written: {n}/{n}   #P:8
#
#                                _-----=> irqs-off/BH-disabled
#                               / _----=> need-resched
#                              | / _---=> hardirq/softirq
#                              || / _--=> preempt-depth
#                              ||| / _-=> migrate-disable
#                              |||| /     delay
#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION
#              | |         |   |||||     |         |
"""


def make_traces(updates: int, tmp: Path) -> tuple[Path, Path, int]:
    """(perfetto trace, ftrace text, updates in them)."""
    spec = SynthSpec(seed=1, duration_s=updates / UPDATES_PER_S, launch_every_s=0.5,
                     service_every_s=0.5)  # fmt: skip
    data, truth = generate(spec)
    pf = tmp / "updates.pftrace"
    pf.write_bytes(data)
    lines = [HEADER.format(n=len(truth))]
    for i, (ts, pid, comm, adj) in enumerate(zip(truth["ts_ns"].tolist(), truth["pid"].tolist(),
                                                 truth["comm"].tolist(), truth["adj"].tolist(),
                                                 strict=True)):  # fmt: skip
        lines.append(f"{'lmkd-612':>24} [{i % 8:03d}] ...1. {ts // 1000 / 1e6:12.6f}: "
                     "oom_score_adj_update: "
                     f"pid={pid} comm={comm} oom_score_adj={adj}\n")  # fmt: skip
    txt = tmp / "updates.txt"
    txt.write_text("".join(lines))
    return pf, txt, len(truth)


def timed_reads(path: Path, repeat: int) -> tuple[list[float], int]:
    walls, n = [], 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        trace = read_any(path)
        walls.append(time.perf_counter() - t0)
        n = len(trace.oom_events)
    return walls, n


def profile(path: Path) -> str:
    prof = cProfile.Profile()
    prof.enable()
    read_any(path)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(18)
    return out.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--updates", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--traces", type=Path, help="make/reuse the trace files in this folder")
    ap.add_argument("--only", choices=["perfetto", "ftrace text"], help="read only this one")
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-reading-") as tmp:
        t0 = time.perf_counter()
        where = args.traces or Path(tmp)
        made = where / "updates.json"
        if args.traces and made.exists():
            pf, txt = where / "updates.pftrace", where / "updates.txt"
            n = json.loads(made.read_text())["updates"]
        else:
            where.mkdir(parents=True, exist_ok=True)
            pf, txt, n = make_traces(args.updates, where)
            made.write_text(json.dumps({"updates": n}))
        print(f"{n:,} updates ({time.perf_counter() - t0:.0f} s to make or find): "
              f"{pf.stat().st_size / 1e6:.1f} MB Perfetto, {txt.stat().st_size / 1e6:.1f} MB "
              "ftrace text")  # fmt: skip
        for name, path in (("perfetto", pf), ("ftrace text", txt)):
            if args.only and name != args.only:
                continue
            walls, got = timed_reads(path, args.repeat)
            if got != n:
                raise SystemExit(f"{name}: read {got} updates of {n}")
            med = statistics.median(walls)
            mb = path.stat().st_size / 1e6
            results[name] = {"updates": n, "wall_s": walls, "updates_per_s": n / med,
                             "mb_per_s": mb / med}  # fmt: skip
            print(f"  {name:12s} median {med:6.2f} s of {[round(w, 2) for w in walls]}: "
                  f"{n / med / 1e3:,.0f}k updates/s, {mb / med:.1f} MB/s")  # fmt: skip
            if args.profile:
                print(profile(path))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
