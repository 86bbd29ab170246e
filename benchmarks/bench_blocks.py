"""Controls stay controls: single and threaded medians in a three-kind run vs a bare loop.

    python benchmarks/bench_blocks.py [--writes 3000] [--population 800] [--json out.json]

A multiprocess write walks every process and evicts caches and TLB entries; a control
write right after it pays for that. One helper run per layout (write by write, `--block
1`, as droidoom did before; blocks of 50 with the first 2 writes after a switch left out,
the default), persistent writes alternating 100/900, all three kinds, with `--population`
extra processes alive; then, while the same targets idle, the bare C loop
(benchmarks/bare_write.c) writes each target alone. The plans come from droidoom's own
`scenario.in_blocks` and `warmup_flags`. Prints helper median / bare median per kind and
layout (goal: within 10% for single and threaded with blocks; bar 25%).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import KINDS, Helper, bare, build_bare  # noqa: E402

from droidoom import scenario  # noqa: E402
from droidoom.protocol import PlanPoint, PlanTarget  # noqa: E402


def layout(block: int, settle: int, n: int, pop: int, tmp: Path, exe: Path) -> list[dict]:
    targets = [PlanTarget(i, k, 8 if k == "threaded" else 1) for i, k in enumerate(KINDS)]
    per = [[(t, (100, 900)[i % 2], 0) for i in range(n)] for t in range(3)]
    timed = tuple(scenario.in_blocks(per, block))
    hold = tuple((0, 900, 0) for _ in range(1000))
    points = [PlanPoint(0, pop, 8, "persistent", 0, 20, timed),
              PlanPoint(1, pop, 8, "persistent", 1.0, 0, hold)]  # fmt: skip
    plan = scenario.Plan(tuple(targets), tuple(points), 0, -1000,
                         info={"blocks": {"settle": settle if block > 1 else 0}})  # fmt: skip
    flags = np.array(scenario.warmup_flags(plan), dtype=bool)
    h = Helper(targets, points, tmp)
    try:
        h.wait_for("point", 1)
        bare_res = {k: bare(exe, h.targets[t], n, persistent=True) for t, k in enumerate(KINDS)}
    finally:
        rec = h.finish()
    rows = []
    for t, kind in enumerate(KINDS):
        sel = (rec["point"] == 0) & (rec["target"] == t) & ~flags[rec["seq"]]
        hm, bm = float(np.median(rec[sel]["latency_ns"])), bare_res[kind]["median_ns"]
        rows.append({"block": block, "kind": kind, "helper_ns": hm, "bare_ns": bm,
                     "ratio": hm / bm})  # fmt: skip
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--writes", type=int, default=3000)
    ap.add_argument("--population", type=int, default=800)
    ap.add_argument("--repeat", type=int, default=3, help="runs per layout, in turn")
    ap.add_argument("--json")
    args = ap.parse_args()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        exe = build_bare(tmp)
        for _ in range(args.repeat):
            for block, settle in ((1, 0), (50, 2)):
                rows += layout(block, settle, args.writes, args.population, tmp, exe)
    print(f"population {args.population}, {args.writes} persistent writes per kind; "
          f"median over {args.repeat} runs of helper/bare")  # fmt: skip
    for block in (1, 50):
        for kind in KINDS:
            r = [x["ratio"] for x in rows if x["block"] == block and x["kind"] == kind]
            h = [x["helper_ns"] for x in rows if x["block"] == block and x["kind"] == kind]
            print(f"  block {block:>2}  {kind:<13} helper {np.median(h):8.0f} ns  "
                  f"x{np.median(r):.2f} of bare  (runs: {', '.join(f'{v:.2f}' for v in r)})")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
