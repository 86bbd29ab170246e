"""adb benchmark (DESIGN.md §6): `droidoom profile` over adb vs --local, side by side.

    python benchmarks/bench_adb.py [--repeat 3] [--skip-default] [--json out.json]

A private adb server (temp HOME, private port, no mDNS) and the loopback adbd peer
(tests/adbd_peer.py) stand in for a phone; both run on this host, so the helper does the
same work either way and the difference is what adb costs: round trips, push/pull, the
streamed progress. Reported:

1. wall time of the real CLI, `profile --quick` and the default sweep, local vs adb,
   alternated run by run (medians; goal: adb/local <= 1.5);
2. the same with the runner called in-process (no interpreter start-up, no report);
3. the cost of single adb operations: a shell round trip, facts, helper push vs reuse.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))  # adb_env: isolated server + peer

from adb_env import AdbServer, PeerProcess, cli_env, make_device_dir  # noqa: E402

from droidoom import spec  # noqa: E402
from droidoom.run import runner  # noqa: E402
from droidoom.targets.adb import AdbTarget  # noqa: E402
from droidoom.targets.local import LocalTarget  # noqa: E402
from droidoom.targets.select import AdbServer as Server  # noqa: E402


def cli_wall(args: list[str], env: dict) -> float:
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "droidoom", "profile", *args, "--out", out],
            env=env,
            check=True,
            capture_output=True,
        )
        return time.perf_counter() - t0


def runner_wall(make_target, sp) -> float:
    with tempfile.TemporaryDirectory() as out:
        t = make_target()
        t0 = time.perf_counter()
        try:
            runner.profile(t, sp, Path(out))
        finally:
            t.close()
        return time.perf_counter() - t0


def side_by_side(local, adb, repeat: int) -> dict:
    """Alternate local and adb runs so load drifts hit both alike; medians."""
    lw, aw = [], []
    for _ in range(repeat):
        lw.append(local())
        aw.append(adb())
    lm, am = statistics.median(lw), statistics.median(aw)
    return {"local_s": lm, "adb_s": am, "ratio": am / lm, "local_all": lw, "adb_all": aw}


def op_costs(make_target, device_dir: str) -> dict:
    t = make_target()
    t0 = time.perf_counter()
    t.facts()
    facts_s = time.perf_counter() - t0
    rt = []
    for _ in range(50):
        t0 = time.perf_counter()
        t.sh("true")
        rt.append(time.perf_counter() - t0)
    for f in Path(device_dir).glob("droidoom-helper"):
        f.unlink()
    t0 = time.perf_counter()
    t.install_helper()
    push_s = time.perf_counter() - t0
    t2 = make_target()
    t2.facts()
    t0 = time.perf_counter()
    t2.install_helper()
    reuse_s = time.perf_counter() - t0
    assert t.helper_pushed and not t2.helper_pushed
    return {
        "connect_and_facts_s": facts_s,
        "shell_round_trip_ms": statistics.median(rt) * 1e3,
        "helper_push_s": push_s,
        "helper_reuse_s": reuse_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per side (default 3)")
    ap.add_argument("--skip-default", action="store_true", help="only the --quick sweep")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    device_dir = make_device_dir()
    res: dict = {}
    with AdbServer() as srv, PeerProcess() as peer:
        srv.connect(peer)
        env = cli_env(srv, device_dir)
        server = Server("127.0.0.1", srv.port)

        def adb_target():
            return AdbTarget(peer.serial, server=server, workdirs=(device_dir,))

        res["ops"] = op_costs(adb_target, device_dir)  # also leaves the helper pushed
        sweeps = [("quick", ["--quick"], spec.QUICK)]
        if not args.skip_default:
            sweeps.append(("default", [], spec.DEFAULT))
        for name, flags, sp in sweeps:
            res[f"cli_{name}"] = side_by_side(
                lambda f=flags: cli_wall(["--local", *f], env),
                lambda f=flags: cli_wall(["--serial", peer.serial, *f], env),
                args.repeat,
            )
            res[f"runner_{name}"] = side_by_side(
                lambda s=sp: runner_wall(LocalTarget, s),
                lambda s=sp: runner_wall(adb_target, s),
                args.repeat,
            )
    subprocess.run(["rm", "-rf", device_dir], check=False)

    ops = res["ops"]
    print("adb operations (private adb server + loopback peer on this host):")
    print(f"  connect + facts (1 script): {ops['connect_and_facts_s'] * 1e3:.0f} ms")
    print(f"  shell round trip:           {ops['shell_round_trip_ms']:.1f} ms (median of 50)")
    print(f"  helper install, push:       {ops['helper_push_s'] * 1e3:.0f} ms")
    print(f"  helper install, hash match: {ops['helper_reuse_s'] * 1e3:.1f} ms (no round trip)")
    print(f"wall time, median of {args.repeat} alternated runs (goal adb/local <= 1.5):")
    for key, label in (("cli", "droidoom profile"), ("runner", "runner.profile()")):
        for name in ("quick", "default"):
            r = res.get(f"{key}_{name}")
            if r:
                print(f"  {label} {name:<7}: local {r['local_s']:6.2f} s  adb {r['adb_s']:6.2f} s"
                      f"  ratio {r['ratio']:.2f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
