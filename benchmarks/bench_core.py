"""Core benchmarks (DESIGN.md §6), measured side by side in one run on this host.

    python benchmarks/bench_core.py [--skip-wall] [--json out.json]

1. fidelity: helper-measured median per kind vs a bare C loop (benchmarks/bare_write.c)
   writing the *same* target processes, in the same run (goal: within 10%);
2. throughput: timed writes per second for a single-threaded target (goal >= 500k/s);
3. spawn: time to bring up 1600 processes x 8 threads (goal < 2 s);
4. wall time of `droidoom profile --local` default and --quick (goals < 60 s, < 15 s).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from droidoom.native import abi_for_machine, binary_path
from droidoom.protocol import PlanPoint, PlanTarget, decode_records, parse_line, render_plan

HERE = Path(__file__).resolve().parent
KINDS = ("single", "threaded", "multiprocess")


class Helper:
    """The real helper running a plan; stdout parsed as it arrives."""

    def __init__(self, targets, points, tmp: Path):
        self.plan = tmp / "plan.txt"
        self.records = tmp / "records.bin"
        self.plan.write_text(render_plan(targets, points))
        self.proc = subprocess.Popen(
            [str(binary_path(abi_for_machine())), "run", str(self.plan), str(self.records)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.targets: dict[int, int] = {}
        self.points: dict[int, dict] = {}

    def wait_for(self, kind: str, idx: int | None = None):
        for line in self.proc.stdout:
            ev = parse_line(line)
            if ev is None:
                continue
            if ev.kind == "target" and ev.fields.get("status") == "ok":
                self.targets[ev.int("idx")] = ev.int("pid")
            if ev.kind == "point":
                self.points[ev.int("idx")] = ev.fields
            if ev.kind == "error":
                raise RuntimeError(line)
            if ev.kind == kind and (idx is None or ev.int("idx", -1) == idx):
                return ev
        raise RuntimeError(f"helper ended before `{kind}`")

    def finish(self) -> np.ndarray:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        return decode_records(self.records.read_bytes())


def build_bare(tmp: Path) -> Path:
    exe = tmp / "bare_write"
    subprocess.run(["cc", "-O2", "-o", str(exe), str(HERE / "bare_write.c")], check=True)
    return exe


def bare(exe: Path, pid: int, n: int, persistent: bool = False) -> dict:
    args = [str(exe), str(pid), str(n), "900", "901"] + (["persistent"] if persistent else [])
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    return {k: float(v) for k, v in (w.split("=") for w in out.split())}


def fidelity(tmp: Path, n: int = 20000, populations=(0, 800)) -> list[dict]:
    """Per kind and population: helper median vs bare loop median on the same targets."""
    exe = build_bare(tmp)
    targets = [PlanTarget(i, k, 8 if k == "threaded" else 1) for i, k in enumerate(KINDS)]
    rows = []
    for pop in populations:
        timed = tuple((t, 900 + (i % 2), 0) for t in range(3) for i in range(n))
        hold = tuple((0, 900, 0) for _ in range(1000))
        h = Helper(
            targets,
            [
                PlanPoint(0, pop, 8, "reopen", 0, 100, timed),
                PlanPoint(1, pop, 8, "reopen", 1.0, 0, hold),  # idle: targets stay alive
            ],
            tmp,
        )
        try:
            h.wait_for("point", 1)  # the timed point is done, the targets idle
            bare_res = {kind: bare(exe, h.targets[t], n) for t, kind in enumerate(KINDS)}
        finally:
            rec = h.finish()
        for t, kind in enumerate(KINDS):
            sel = rec[(rec["point"] == 0) & (rec["target"] == t)]
            hm = float(np.median(sel["latency_ns"]))
            bm = bare_res[kind]["median_ns"]
            rows.append(
                {
                    "population": pop,
                    "kind": kind,
                    "helper_ns": hm,
                    "bare_ns": bm,
                    "ratio": hm / bm,
                }  # fmt: skip
            )
    return rows


def throughput(tmp: Path, n: int = 200000) -> dict:
    """Timed writes per second, single-threaded target, back to back."""
    out = {}
    for mode in ("reopen", "persistent"):
        writes = tuple((0, 900 + (i % 2), 0) for i in range(n))
        h = Helper([PlanTarget(0, "single", 1)], [PlanPoint(0, 0, 1, mode, 0, 100, writes)], tmp)
        t0 = time.perf_counter()
        h.wait_for("done")
        wall = time.perf_counter() - t0
        rec = h.finish()
        span = (rec["t_ns"][-1] + rec["latency_ns"][-1] - rec["t_ns"][0]) / 1e9
        out[mode] = {
            "writes_per_s": len(rec) / span,
            "median_ns": float(np.median(rec["latency_ns"])),
            "helper_wall_s": wall,
        }
    return out


def spawn(tmp: Path, population: int = 1600, threads: int = 8) -> float:
    h = Helper(
        [PlanTarget(0, "single", 1)],
        [PlanPoint(0, population, threads, "reopen", 0, 0, ((0, 900, 0),))],
        tmp,
    )
    ev = h.wait_for("point", 0)
    h.finish()
    return int(ev.fields["spawn_ns"]) / 1e9


def wall(*args: str) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "droidoom", "profile", "--local", *args, "--out", out],
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--skip-wall", action="store_true", help="skip the profile wall times")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    res: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res["fidelity"] = fidelity(tmp)
        res["throughput"] = throughput(tmp)
        res["spawn_1600x8_s"] = spawn(tmp)
    if not args.skip_wall:
        res["wall_quick_s"] = wall("--quick")
        res["wall_default_s"] = wall()

    print("fidelity: helper median vs bare C loop on the same targets (goal: within 10%)")
    for r in res["fidelity"]:
        print(
            f"  {r['kind']:<13} pop {r['population']:>4}: helper {r['helper_ns'] / 1e3:7.2f} us"
            f"  bare {r['bare_ns'] / 1e3:7.2f} us  ratio {r['ratio']:.3f}"
        )
    for mode, t in res["throughput"].items():
        print(f"throughput ({mode}): {t['writes_per_s'] / 1e3:.0f}k timed writes/s "
              f"(median {t['median_ns']:.0f} ns)")  # fmt: skip
    print(f"spawn 1600 x 8 threads: {res['spawn_1600x8_s']:.2f} s (goal < 2 s)")
    if "wall_quick_s" in res:
        print(f"profile --quick: {res['wall_quick_s']:.1f} s (goal < 15 s)")
        print(f"profile default: {res['wall_default_s']:.1f} s (goal < 60 s)")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
