"""The arm64 helper in a real arm64 guest: its per-write latency vs a bare C loop.

    python benchmarks/bench_arm64_overhead.py [--writes 20000] [--json out.json]

Boots the lab's arm64 "fixed" kernel (`droidoom lab build --arch arm64`, built first if
needed) once under TCG, then in that one guest:
1. the helper: a population-0 sweep point of single-threaded writes (reopen, as lmkd does),
   its median per write (what droidoom reports);
2. benchmarks/bare_write.c, cross-compiled statically with zig (musl), as the helper is, writing
   the oom_score_adj of an idle process with open+write+close and CLOCK_MONOTONIC around
   each write: the least any tool can measure there.
The difference is the helper's per-write overhead (plan decoding, record keeping).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

from droidoom import analysis, spec
from droidoom.lab import arch, build
from droidoom.lab.qemu import VmSpec
from droidoom.run.runner import profile
from droidoom.targets.vm import VmTarget

HERE = Path(__file__).resolve().parent


def cross_bare(tmp: Path) -> Path:
    exe = tmp / "bare_write"
    # zig's musl, as the helper is built (device_scripts/build_helpers.py): the kernel's
    # cross gcc comes without an arm64 libc
    subprocess.run([sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-musl",
                    "-O2", "-static", "-o", str(exe), str(HERE / "bare_write.c")],
                   check=True)  # fmt: skip
    return exe


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--writes", type=int, default=20000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    image = build.build("fixed", arch=arch.ARM64).image
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = cross_bare(tmp)
        with VmTarget(VmSpec(image, accel="tcg")) as t:
            s = replace(spec.QUICK, populations=(0,), kinds=("single",), writes=args.writes)
            r = profile(t, s, tmp / "runs")
            helper_ns = float(analysis.summary(r.samples).set_index("kind")["median_ns"]["single"])
            t.push(exe, "/tmp/bare_write", mode=0o755)
            out = t.sh(f"sleep 600 & p=$!; /tmp/bare_write $p {args.writes} 900 901; kill $p",
                       timeout=600).stdout  # fmt: skip
            bare = {k: float(v) for k, v in (w.split("=") for w in out.split())}
            res = {"kernel": t.facts().kernel_release, "vm": t.vm_info(),
                   "helper_median_ns": helper_ns, "bare_median_ns": bare["median_ns"],
                   "bare_p90_ns": bare["p90_ns"],
                   "overhead_ns": helper_ns - bare["median_ns"]}  # fmt: skip
    print(f"arm64 guest ({res['vm']['cpu']}, {res['vm']['accel']}), {args.writes} writes: "
          f"helper median {helper_ns / 1000:.1f} us, bare loop {bare['median_ns'] / 1000:.1f} us, "
          f"overhead {res['overhead_ns'] / 1000:+.1f} us per write")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
