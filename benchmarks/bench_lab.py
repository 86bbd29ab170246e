"""Kernel lab benchmark: boot, `profile --kernel --quick`, and cost against population.

    python benchmarks/bench_lab.py [--accel tcg] [--json out.json]

Uses the reference kernels of `droidoom lab build` (built first if needed), measured side by
side in one run:
1. boot: QEMU start to the guest agent's first answer (median of 3);
2. wall time of `droidoom profile --kernel IMAGE --quick` per kernel (goal < 15 s, TCG);
3. one booted guest, one sweep point per population: the wall time of the point (spawn +
   writes + teardown) and the threaded median on both kernels, to show how the cost grows.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from droidoom import analysis, spec
from droidoom.lab import build
from droidoom.lab.qemu import VmSpec
from droidoom.run.runner import profile
from droidoom.targets.vm import VmTarget

POPULATIONS = (0, 400, 800, 1600, 2400)  # 2 threads each: 2400 fits threads-max of 1 GiB


def bench_boot(image: Path, accel: str) -> float:
    times = []
    for _ in range(3):
        t0 = time.monotonic()
        t = VmTarget(VmSpec(image, accel=accel))
        times.append(time.monotonic() - t0)
        t.close()
    return statistics.median(times)


def bench_quick(image: Path, accel: str, out: Path) -> float:
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "droidoom", "profile", "--kernel", str(image),
                        "--quick", "--accel", accel, "--out", str(out)],
                       capture_output=True, text=True)  # fmt: skip
    if p.returncode != 0:
        raise SystemExit(p.stderr)
    return time.monotonic() - t0


def bench_growth(image: Path, accel: str, out: Path) -> list[dict]:
    rows = []
    t = VmTarget(VmSpec(image, accel=accel))
    try:
        for pop in POPULATIONS:
            s = replace(spec.QUICK, populations=(pop,), threads=2, kinds=("single", "threaded"))
            t0 = time.monotonic()
            r = profile(t, s, out)
            wall = time.monotonic() - t0
            med = analysis.summary(r.samples).set_index("kind")["median_ns"]
            rows.append({"population": pop, "wall_s": round(wall, 2),
                         "single_ns": float(med["single"]),
                         "threaded_ns": float(med["threaded"])})  # fmt: skip
    finally:
        t.close()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--accel", default="tcg")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    images = {v: build.build(v).image for v in build.VARIANTS}
    res: dict = {"accel": args.accel}
    with tempfile.TemporaryDirectory() as tmp:
        res["boot_s"] = round(bench_boot(images["fixed"], args.accel), 2)
        print(f"boot to agent: {res['boot_s']:.2f} s (median of 3)")
        for v, image in images.items():
            res[f"quick_{v}_s"] = round(bench_quick(image, args.accel, Path(tmp) / v), 1)
            print(f"profile --kernel {v} --quick: {res[f'quick_{v}_s']:.1f} s wall")
        print("population  wall s (fixed / regressed)  threaded median us (fixed / regressed)")
        growth = {v: bench_growth(img, args.accel, Path(tmp) / f"g-{v}")
                  for v, img in images.items()}  # fmt: skip
        res["growth"] = growth
        for a, b in zip(growth["fixed"], growth["regressed"], strict=True):
            print(f"{a['population']:10}  {a['wall_s']:6.2f} / {b['wall_s']:6.2f}"
                  f"              {a['threaded_ns'] / 1e3:8.2f} / {b['threaded_ns'] / 1e3:8.2f}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
