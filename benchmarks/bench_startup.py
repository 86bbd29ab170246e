"""CLI start-up benchmark (issue: `--version`/`--help` within 2.5x of `import typer, rich`).

    python benchmarks/bench_startup.py [--repeat 9] [--json out.json]

Times whole fresh processes, side by side in turn (floor, then each command, repeated), so
a drifting machine load moves them alike: the floor is a Python that imports typer and rich
(a Typer CLI's least), then `droidoom --version`, `--help`, `profile --help` and
`cost --help`. Prints each command's median wall time and its ratio to the floor's median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

BAR = 2.5
COMMANDS: dict[str, list[str]] = {
    "import typer, rich": [sys.executable, "-c", "import typer, rich"],
    "--version": [sys.executable, "-m", "droidoom", "--version"],
    "--help": [sys.executable, "-m", "droidoom", "--help"],
    "profile --help": [sys.executable, "-m", "droidoom", "profile", "--help"],
    "cost --help": [sys.executable, "-m", "droidoom", "cost", "--help"],
}


def wall(argv: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args()
    for argv in COMMANDS.values():  # warm the page cache
        wall(argv)
    times: dict[str, list[float]] = {k: [] for k in COMMANDS}
    for _ in range(args.repeat):
        for name, argv in COMMANDS.items():
            times[name].append(wall(argv))
    floor = statistics.median(times["import typer, rich"])
    out = {}
    for name, ts in times.items():
        med = statistics.median(ts)
        out[name] = {"median_s": round(med, 3), "ratio_to_floor": round(med / floor, 2)}
        ok = "" if name.startswith("import") else ("  ok" if med / floor <= BAR else "  OVER BAR")
        print(f"{name:20s} {med:6.3f} s  x{med / floor:4.2f}{ok}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
