"""perfetto capture benchmark: `profile --quick` over adb with and without --capture perfetto.

    python benchmarks/bench_perfetto.py [--repeat 3] [--json out.json]
    python benchmarks/bench_perfetto.py --skew-us 20 --skew-us 2000  # a clock snapshot off

A private adb server and the loopback adbd peer running as the shell uid (2000), its
`perfetto` stand-in talking to the root traced stand-in (tests/perfetto_env.py), which
records this host's oom_score_adj_update tracepoint. Runs alternate (clock, then
clock,perfetto) so drift hits both alike. Reported, medians over the repeats:

1. wall time of the real CLI per capture set, and the ratio perfetto/clock (what starting,
   stopping, pulling and parsing the trace cost);
2. median write latency per kind, with and without the tracepoint being recorded;
3. the capture's matched fraction, events inside their write, median event offset, and
   the trace's size.

With --skew-us, the traced stand-in writes one clock snapshot, off by that much
(TRACED_STANDIN_SNAPSHOT_SKEW_NS), and only `clock,perfetto` runs: reported per skew are
the matched fraction (the offset found from the writes), what the snapshot's own offset
would have matched (the same trace joined without the search), and how the offset was found.
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
                                               "offset_median_ns", "lost_events", "clock",
                                               "clock_source", "snapshot_error_ns")})  # fmt: skip
            res["trace_bytes"] = (run / "trace.pftrace").stat().st_size
            res["snapshot_only_matched_fraction"] = snapshot_only(run, meta)
        return res


def snapshot_only(run: Path, meta: dict) -> float | None:
    """The run's trace joined again at the clock snapshot's offset (no search from the
    writes): what droidoom matched before it searched."""
    from unittest import mock

    import pandas as pd

    from droidoom.capture import perfetto
    from droidoom.capture.base import CaptureRunInfo
    from droidoom.traces.perfetto import read_trace

    samples = pd.read_parquet(run / "samples.parquet")
    helper = int(meta["captures"]["perfetto"].get("helper_pid") or 0) or _helper_pid(run)
    targets = {i: t for i, t in enumerate(meta.get("targets") or [])}
    info = CaptureRunInfo(helper_pid=helper, targets=targets)
    with mock.patch.object(perfetto, "wide_offset", lambda *a, **k: None):
        _, stats, _ = perfetto.join_trace(samples, read_trace(run / "trace.pftrace"), info)
    return stats["matched_fraction"]


def _helper_pid(run: Path) -> int:
    import pandas as pd

    ev = pd.read_parquet(run / "perfetto_events.parquet")
    return int(ev["writer_tid"].mode().iloc[0]) if len(ev) else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path)
    ap.add_argument("--skew-us", type=float, action="append", default=[],
                    help="make the trace's only clock snapshot off by this much (repeatable)")
    args = ap.parse_args()
    if args.skew_us:
        return skewed(args)
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


def skewed(args: argparse.Namespace) -> None:
    """--skew-us: clock,perfetto runs against a stand-in whose only snapshot is off."""
    device_dir = make_device_dir(uid=SHELL_UID)
    out: dict[str, list[dict]] = {}
    try:
        with AdbServer(default_adb_binary()) as server:
            for us in args.skew_us:
                skew = str(round(us * 1000))
                traced = TracedStandin().start(env={"TRACED_STANDIN_SNAPSHOT_SKEW_NS": skew})
                os.environ.update([traced.env_item])
                peer = ShellUidPeer(PROPS).start()
                try:
                    server.connect(peer)
                    out[f"{us:g}"] = [one(server, peer.serial, device_dir, "clock,perfetto")
                                      for _ in range(args.repeat)]  # fmt: skip
                finally:
                    server.disconnect(peer)
                    peer.stop()
                    traced.stop()
    finally:
        shutil.rmtree(device_dir, ignore_errors=True)
    print(f"--capture perfetto with the trace's only clock snapshot off, {args.repeat} runs each:")
    for us, rs in out.items():
        print(f"  snapshot off by {us} us:")
        print(f"    matched fraction: {[round(r['matched_fraction'], 4) for r in rs]}")
        print(f"    at the snapshot's offset it would be: "
              f"{[round(r['snapshot_only_matched_fraction'] or 0, 4) for r in rs]}")  # fmt: skip
        print(f"    offset from: {sorted({r['clock_source'] for r in rs})}, snapshot error "
              f"found (us): {[round(r['snapshot_error_ns'] / 1e3, 2) for r in rs]}")  # fmt: skip
        print(f"    wall (s): {[round(r['wall_s'], 1) for r in rs]}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
