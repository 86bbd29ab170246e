"""Analysis benchmark (DESIGN.md §6: `droidoom.load` of 10 M samples < 3 s).

    python benchmarks/bench_analysis.py [--rows 10000000] [--repeat 3] [--json out.json]

Writes a run directory with the real schema (run.json + samples.parquet, through
droidoom.store's own writers, as the runner does) to a temp dir, then times, side by side in
a fresh interpreter each time (what a user's first call pays): droidoom.load, analysis.summary,
their sum (goal < 3 s), and for scale the same medians the obvious pandas way
(groupby().quantile()), checked equal. Medians of --repeat fresh processes.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from droidoom import analysis, schema, store
from droidoom.scenario import ROLES
from droidoom.spec import DEFAULT
from droidoom.targets.base import TargetFacts

GOAL_S = 3.0
HERE = Path(__file__).resolve().parent


def synthetic_run(out: Path, rows: int, seed: int = 0) -> Path:
    """A complete run dir of `rows` writes shaped like a default profile of this VM: every
    kind x mode x population of the default spec, latencies like the measured ones (flat
    single/threaded, multiprocess +40 ns per process), a few failed writes."""
    spec = replace(DEFAULT, modes=("reopen", "persistent"))
    pops, kinds, modes = spec.populations, spec.kinds, spec.modes
    n_groups = len(pops) * len(kinds) * len(modes)
    per = -(-rows // n_groups)
    spec = replace(spec, writes=per)
    rng = np.random.default_rng(seed)
    device = f"local:{socket.gethostname()}"
    run_id = f"20260101T000000Z-{device.replace(':', '_')}"
    # one sweep point per mode x population; in a point the kinds take turns, write by write
    point = np.repeat(np.arange(len(modes) * len(pops), dtype=np.int32), per * len(kinds))[:rows]
    kind = np.tile(np.arange(len(kinds), dtype=np.int8), per * len(modes) * len(pops))[:rows]
    pop = np.asarray(pops, dtype=np.int32)[point % len(pops)]
    mode = (point // len(pops)).astype(np.int8)
    base = np.where(kind == 2, 900 + 40 * pop, np.where(kind == 1, 410, 380))
    latency = (base * rng.lognormal(0.0, 0.15, rows)).astype(np.int64)
    seq = np.arange(rows, dtype=np.int64)
    adj_to = np.where(seq % 2 == 0, 900, 0).astype(np.int16)
    err = np.where(rng.random(rows) < 1e-5, 13, 0).astype(np.int16)  # rare EACCES

    def cat(codes, categories):
        return pd.Categorical.from_codes(codes, list(categories))

    zeros = np.zeros(rows, dtype=np.int8)
    df = pd.DataFrame(
        {
            "run_id": cat(zeros, [run_id]),
            "device": cat(zeros, [device]),
            "kind": cat(kind, kinds),
            "mode": cat(mode, modes),
            "population": pop,
            "threads": np.full(rows, spec.threads, dtype=np.int16),
            "point": point,
            "seq": seq,
            "adj_from": (900 - adj_to).astype(np.int16),
            "adj_to": adj_to,
            "role": cat(np.where(adj_to == 0, 0, len(ROLES) - 1).astype(np.int8), ROLES),
            "latency_ns": latency,
            "t_ns": np.cumsum(latency + 150),
            "cpu": (seq % 2).astype(np.int16),
            "err": err,
        }
    )
    df = schema.coerce(df)
    facts = TargetFacts(
        device=device, transport="local", model="Linux host", abi="x86_64",
        kernel_release=os.uname().release, cpus=os.cpu_count() or 1, root=True,
        pid_max=32768, threads_max=192730,
    )  # fmt: skip
    run = out / run_id
    run.mkdir(parents=True)
    store.write_table(run / store.SAMPLES, df)
    meta = {
        "format": store.FORMAT, "run_id": run_id, "device": device, "status": "complete",
        "started": "2026-01-01T00:00:00+00:00", "finished": "2026-01-01T00:01:00+00:00",
        "spec": spec.as_dict(), "target": facts.to_json(), "writes_planned": rows,
        "synthetic": "benchmarks/bench_analysis.py",
    }  # fmt: skip
    store.write_json(run / store.RUN_JSON, meta)
    return run


def time_in_fresh_process(run: Path) -> dict:
    """load + summary as a user's first call pays it: a new interpreter (imports done before
    the clock starts), cold allocator, the file in the page cache as after writing it."""
    code = (
        "import json, sys, time; import droidoom; from droidoom import analysis; "
        "from bench_analysis import pandas_summary; run = sys.argv[1]; "
        "t0 = time.perf_counter(); df = droidoom.load(run); t1 = time.perf_counter(); "
        "s = analysis.summary(df); t2 = time.perf_counter(); ref = pandas_summary(df); "
        "t3 = time.perf_counter(); "
        "ok = bool(((s['median_ns'].to_numpy() - ref[0.5].to_numpy()) == 0).all()); "
        "print(json.dumps(dict(rows=len(df), groups=len(s), load=t1 - t0, summary=t2 - t1, "
        "total=t2 - t0, pandas=t3 - t2, same_medians=ok)))"
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
    }
    p = subprocess.run([sys.executable, "-c", code, str(run)], capture_output=True, text=True,
                       env=env, check=True)  # fmt: skip
    return json.loads(p.stdout)


def pandas_summary(df: pd.DataFrame) -> pd.DataFrame:
    """The obvious way, for scale: groupby + quantile (no MAD, which pandas lacks)."""
    ok = df[df["err"] == 0]
    g = ok.groupby(list(analysis.GROUP_KEYS), observed=True, sort=True)["latency_ns"]
    return g.quantile([0.5, 0.9, 0.99]).unstack()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="fresh processes to time")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="droidoom-bench-") as tmp:
        t = time.perf_counter()
        run = synthetic_run(Path(tmp), args.rows)
        t_write = time.perf_counter() - t
        size = (run / store.SAMPLES).stat().st_size
        trials = [time_in_fresh_process(run) for _ in range(args.repeat)]
    assert all(tr["same_medians"] for tr in trials), "summary disagrees with pandas"

    def med(key):
        return float(np.median([tr[key] for tr in trials]))

    rows, t_load, t_sum, t_both, t_pandas = (
        trials[0]["rows"], med("load"), med("summary"), med("total"), med("pandas")
    )  # fmt: skip
    worst = max(tr["total"] for tr in trials)
    figures = {
        "rows": rows,
        "parquet_mb": round(size / 1e6, 1),
        "groups": trials[0]["groups"],
        "write_s": round(t_write, 3),
        "load_s": round(t_load, 3),
        "summary_s": round(t_sum, 3),
        "load_plus_summary_s": round(t_both, 3),
        "load_plus_summary_worst_s": round(worst, 3),
        "pandas_groupby_quantile_s": round(t_pandas, 3),
        "goal_s": GOAL_S,
        "trials": args.repeat,
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}",
    }
    print(f"{rows:,} rows, samples.parquet {figures['parquet_mb']} MB, {figures['groups']} "
          f"groups; medians of {args.repeat} fresh processes")  # fmt: skip
    print(f"  write (store.write_table)   {t_write:7.3f} s")
    print(f"  droidoom.load               {t_load:7.3f} s  ({rows / t_load / 1e6:.0f} M rows/s)")
    print(f"  analysis.summary            {t_sum:7.3f} s  (count, 6 quantiles, exact MAD)")
    print(
        f"  load + summary              {t_both:7.3f} s  (worst {worst:.3f} s) "
        f"goal < {GOAL_S:g} s: {'OK' if worst < GOAL_S else 'MISSED'}"
    )
    print(
        f"  pandas groupby().quantile   {t_pandas:7.3f} s  "
        f"(3 quantiles, no MAD; summary is {t_pandas / t_sum:.1f}x faster)"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
