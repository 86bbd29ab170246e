"""perfetto capture benchmark: `profile --quick` over adb with and without --capture perfetto.

    python benchmarks/bench_perfetto.py [--repeat 3] [--json out.json]

A private adb server and the loopback adbd peer running as the shell uid (2000), its
`perfetto` stand-in talking to the root traced stand-in (tests/perfetto_env.py), which
records this host's oom_score_adj_update tracepoint. Runs alternate (clock, then
clock,perfetto) so drift hits both alike. Reported, medians over the repeats:

1. wall time of the real CLI per capture set, and the ratio perfetto/clock (what starting,
   stopping, pulling and parsing the trace cost);
2. median write latency per kind, with and without the tracepoint being recorded;
3. the capture's matched fraction, events inside their write, median event offset, and
   the trace's size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # adb_env / perfetto_env: server, peer, traced

from adb_env import (  # noqa: E402
    SHELL_UID,
    AdbServer,
    ShellUidPeer,
    cli_env,
    default_adb_binary,
    make_device_dir,
)
from perfetto_env import TracedStandin  # noqa: E402

import droidoom  # noqa: E402

PROPS = {"ro.build.version.sdk": "34", "ro.build.type": "user", "init.svc.traced": "running"}


def one(server, serial, device_dir, capture: str) -> dict:
    import subprocess

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        p = subprocess.run(
            [sys.executable, "-m", "droidoom", "profile", "--serial", serial, "--quick",
             "--capture", capture, "--out", out],
            env=cli_env(server, device_dir), capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"profile failed: {p.stderr[-2000:]}")
        (run,) = [d for d in Path(out).iterdir() if d.is_dir()]
        meta = json.loads((run / "run.json").read_text())
        df = droidoom.load(run)
        lat = df.groupby("kind", observed=True)["latency_ns"].median().to_dict()
        res = {"wall_s": wall, "latency_median_ns": {str(k): float(v) for k, v in lat.items()}}
        pm = meta["captures"].get("perfetto")
        if pm:
            res.update({k: pm.get(k) for k in ("matched_fraction", "inside_write_fraction",
                                               "offset_median_ns", "lost_events")})  # fmt: skip
            res["trace_bytes"] = (run / "trace.pftrace").stat().st_size
        return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    traced = TracedStandin().start()
    os.environ.update([traced.env_item])  # the peer inherits it
    device_dir = make_device_dir(uid=SHELL_UID)
    runs: dict[str, list[dict]] = {"clock": [], "clock,perfetto": []}
    try:
        with AdbServer(default_adb_binary()) as server:
            peer = ShellUidPeer(PROPS).start()
            try:
                server.connect(peer)
                for _ in range(args.repeat):
                    for cap in runs:
                        runs[cap].append(one(server, peer.serial, device_dir, cap))
            finally:
                server.disconnect(peer)
                peer.stop()
    finally:
        traced.stop()
        shutil.rmtree(device_dir, ignore_errors=True)
    med = {cap: statistics.median(r["wall_s"] for r in rs) for cap, rs in runs.items()}
    print(f"profile --quick over adb (shell uid), median of {args.repeat}:")
    for cap, rs in runs.items():
        lat = {k: statistics.median(r["latency_median_ns"][k] for r in rs)
               for k in rs[0]["latency_median_ns"]}  # fmt: skip
        lat_s = ", ".join(f"{k} {v:.0f} ns" for k, v in sorted(lat.items()))
        print(f"  --capture {cap:15s} wall {med[cap]:5.1f} s   median latency: {lat_s}")
    print(f"  ratio perfetto/clock wall: {med['clock,perfetto'] / med['clock']:.2f}")
    pf = runs["clock,perfetto"]
    print(f"  matched fraction: {[r['matched_fraction'] for r in pf]}")
    print(f"  events inside their write: {[r['inside_write_fraction'] for r in pf]}")
    print(f"  median event offset (ns): {[r['offset_median_ns'] for r in pf]}")
    print(f"  lost events: {[r['lost_events'] for r in pf]}; "
          f"trace bytes: {[r['trace_bytes'] for r in pf]}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "wall_median_s": med}, indent=1))


if __name__ == "__main__":
    main()
