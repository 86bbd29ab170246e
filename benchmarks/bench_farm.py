"""Farm orchestration overhead: 1, 4 and 8 devices profiled at once, side by side.

    python benchmarks/bench_farm.py [--sizes 1,4,8] [--repeat 2] [--json out.json]
                                    [-- extra `droidoom farm run` profile options]

Devices are loopback adbd peers (tests/adbd_peer.py) behind one real, isolated adb server
(private port, temp HOME, ADB_MDNS=0 ADB_LIBUSB=0 ADB_EMU=0). Each farm size profiles the
same small paced spec on every device (default: --quick populations with 2-thread
processes at --rate 400, so the device side sleeps rather than computes); each device
gets its own on-device workdir, so every run includes its helper push. Reported: wall
time of `farm.run_farm` per size, its ratio to 1 device (goal: 8 devices <= 1.5x), and
a plain single-device `runner.profile` (no farm) as the baseline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from adb_env import AdbServer, PeerProcess  # noqa: E402

from droidoom import spec as specs  # noqa: E402
from droidoom.farm import fleet as farm  # noqa: E402
from droidoom.farm import inventory  # noqa: E402
from droidoom.run import runner  # noqa: E402
from droidoom.targets.adb import AdbTarget  # noqa: E402
from droidoom.targets.select import AdbServer as Where  # noqa: E402

DEFAULT_SPEC = replace(specs.QUICK, threads=2, rate=400.0)


def _inventory(server_port: int, serials: list[str], tmp: Path, tag: str) -> inventory.Inventory:
    data = {
        "name": f"bench-{tag}",
        "servers": [f"127.0.0.1:{server_port}"],
        "devices": [
            {"serial": s, "workdir": str(tmp / f"{tag}-dev{i}")} for i, s in enumerate(serials)
        ],
    }
    return inventory.parse(data)


def run_sizes(sizes, repeat, spec, out: Path) -> dict:
    peers = []
    results: dict = {"spec": spec.as_dict(), "sizes": {}, "baseline_s": []}
    with AdbServer() as server:
        try:
            for i in range(max(sizes)):
                peers.append(PeerProcess({"ro.product.model": f"Bench {i}"}).start())
                server.connect(peers[-1])
            serials = [p.serial for p in peers]
            where = Where("127.0.0.1", server.port)
            for r in range(repeat):
                target = AdbTarget(serials[0], server=where, workdir=str(out / f"base{r}"))
                t0 = time.perf_counter()
                res = runner.profile(target, spec, out / "baseline")
                results["baseline_s"].append(time.perf_counter() - t0)
                target.close()
                assert res.status == "complete", res.meta.get("reason")
                for n in sizes:
                    inv = _inventory(server.port, serials[:n], out, f"r{r}n{n}")
                    res = inventory.resolve(inv)
                    t0 = time.perf_counter()
                    fr = farm.run_farm(res, spec, out / "farms", concurrency=n)
                    wall = time.perf_counter() - t0
                    bad = [o for o in fr.outcomes if o.status != "complete"]
                    assert not bad, [(o.device.label, o.status, o.error) for o in bad]
                    runs = [o.result.meta for o in fr.outcomes]
                    results["sizes"].setdefault(str(n), []).append(
                        {"wall_s": wall, "writes": sum(len(o.result.samples) for o in fr.outcomes)}
                    )
                    print(f"  repeat {r + 1}: {n} device(s) {wall:6.2f} s ({len(runs)} runs)")
        finally:
            for p in peers:
                p.stop()
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1,4,8")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rate", type=float, default=DEFAULT_SPEC.rate)
    ap.add_argument("--populations", default=",".join(map(str, DEFAULT_SPEC.populations)))
    ap.add_argument("--threads", type=int, default=DEFAULT_SPEC.threads)
    ap.add_argument("--writes", type=int, default=DEFAULT_SPEC.writes)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]
    spec = replace(
        DEFAULT_SPEC,
        rate=args.rate,
        threads=args.threads,
        writes=args.writes,
        populations=tuple(int(x) for x in args.populations.split(",")),
    ).validate()
    print(
        f"spec: populations {spec.populations}, {spec.writes} writes x {len(spec.kinds)} kinds, "
        f"{spec.threads} threads/process, rate {spec.rate:g}/s"
    )
    with tempfile.TemporaryDirectory(prefix="bench-farm-") as tmp:
        res = run_sizes(sizes, args.repeat, spec, Path(tmp))
    base = statistics.median(res["baseline_s"])
    one = statistics.median(x["wall_s"] for x in res["sizes"][str(sizes[0])])
    print(f"\nplain runner.profile, 1 device: {base:.2f} s")
    print(f"{'devices':>8} {'wall s':>8} {'vs 1':>6}  {'writes':>7}")
    for n in sizes:
        walls = [x["wall_s"] for x in res["sizes"][str(n)]]
        med = statistics.median(walls)
        res["sizes"][str(n)] = {"runs": res["sizes"][str(n)], "median_s": med, "ratio": med / one}
        writes = res["sizes"][str(n)]["runs"][0]["writes"]
        print(f"{n:>8} {med:>8.2f} {med / one:>5.2f}x  {writes:>7}")
    top = max(sizes)
    ratio = res["sizes"][str(top)]["ratio"]
    verdict = "meets" if ratio <= 1.5 else "MISSES"
    print(f"{top} devices / 1 device = {ratio:.2f}x ({verdict} the <= 1.5x goal)")
    print(f"farm of 1 / plain runner = {one / base:.2f}x")
    res["baseline_median_s"] = base
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
