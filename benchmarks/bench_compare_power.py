"""compare's power beside a CPU hog: false alarms on same-host pairs, detection of a real
10% / 20% multiprocess slowdown at population 800.

    python benchmarks/bench_compare_power.py collect OUT [--pairs 20] [--trials 5]
    python benchmarks/bench_compare_power.py evaluate OUT [--max-ratio 1.05] [--json f.json]

`collect` starts one CPU hog (`sh -c 'while :; do :; done'`) and profiles this host
(`profile --local --population 400,800 --kinds threaded,multiprocess --writes 1500`: blocks
of 50, so ~30 blocks per kind and point) into OUT/same/pNN-{a,b} for `--pairs` same-host
pairs, then `--trials` pairs per slowdown into OUT/slow10/tNN-{base,new} (and slow20):
BASE as is, NEW with extra sleeping processes alive that this script spawns (and kills,
by pid) around the run. Every multiprocess write walks every process of the host, so a
share s more processes walked makes it ~s slower: the count is sized from the first
same-host run (s x multiprocess median at 800 / ns per process); the slowdown each NEW
really had is measured and printed, not assumed. The hog is killed by its pid at the end.

`evaluate` runs `droidoom compare BASE NEW --max-ratio R --csv` (the console script, as a
CI would) on every pair and counts exit statuses and the multiprocess-800 decisions.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPEC = ["--local", "--population", "400,800", "--kinds", "threaded,multiprocess",
        "--writes", "1500"]  # fmt: skip


def profile(out: Path) -> Path:
    """One run into `out` (a fresh folder): its run directory."""
    cmd = [sys.executable, "-m", "droidoom", "profile", *SPEC, "--out", str(out)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if p.returncode != 0:
        raise SystemExit(f"profile failed ({p.returncode}): {p.stderr[-2000:]}")
    (run,) = [d for d in out.iterdir() if d.is_dir()]
    return run


def hog() -> subprocess.Popen[bytes]:
    return subprocess.Popen(["sh", "-c", "while :; do :; done"])


def sleepers(n: int) -> list[subprocess.Popen[bytes]]:
    """`n` sleeping processes of ours: more tasks for every multiprocess write to walk."""
    return [subprocess.Popen(["sleep", "3600"]) for _ in range(n)]


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    """Kill exactly the processes this script started (by pid), and reap them."""
    for p in procs:
        if p.poll() is None:
            os.kill(p.pid, signal.SIGKILL)
    for p in procs:
        p.wait()


def mp_medians(run: Path) -> tuple[float, float]:
    """Multiprocess median at 400 and 800 (ns) of a run."""
    import droidoom
    from droidoom.schema import timed

    df = timed(droidoom.load(run))
    mp = df[df["kind"].astype(str) == "multiprocess"]
    med = mp.groupby("population")["latency_ns"].median()
    return float(med[400]), float(med[800])


def collect(out: Path, pairs: int, trials: int, shares: list[float]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    h = hog()
    log: dict[str, object] = {"spec": SPEC, "hog_pid": h.pid, "started": time.time()}
    try:
        first = None
        for i in range(pairs):
            for side in "ab":
                run = profile(out / "same" / f"p{i:02d}-{side}")
                first = first or run
            print(f"same-host pair {i + 1}/{pairs} done", flush=True)
        assert first is not None
        m400, m800 = mp_medians(first)
        per_proc = (m800 - m400) / 400
        log["ns_per_process"] = per_proc
        for share in shares:
            extra = round(share * m800 / per_proc)
            log[f"extra_{share:g}"] = extra
            for t in range(trials):
                name = f"slow{round(share * 100)}"
                base = profile(out / name / f"t{t:02d}-base")
                bg = sleepers(extra)
                try:
                    new = profile(out / name / f"t{t:02d}-new")
                finally:
                    stop(bg)
                b, n = mp_medians(base)[1], mp_medians(new)[1]
                print(f"{name} trial {t + 1}/{trials}: {extra} sleepers, multiprocess 800 "
                      f"x{n / b:.3f}", flush=True)  # fmt: skip
    finally:
        stop([h])
        log["finished"] = time.time()
        (out / "collect.json").write_text(json.dumps(log, indent=1))


def compare(base: Path, new: Path, max_ratio: float, *more: str) -> tuple[int, dict[str, str]]:
    """(exit status, the multiprocess 800 row of the CSV) of `droidoom compare`: the console
    script's own entry point (droidoom.cli.main), in this process to spare an interpreter
    start per pair; its output is discarded."""
    import contextlib
    import io

    from droidoom import cli

    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "c.csv"
        argv = ["droidoom", "compare", str(base), str(new), "--max-ratio", str(max_ratio),
                "--csv", str(table), *more]  # fmt: skip
        old, sys.argv = sys.argv, argv
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                cli.main()
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        finally:
            sys.argv = old
        rows = list(csv.DictReader(table.open())) if table.exists() else []
    mp = [r for r in rows if r["kind"] == "multiprocess" and r["population"] == "800"]
    return code, (mp[0] if mp else {})


def pairs_of(folder: Path, a: str, b: str) -> list[tuple[Path, Path]]:
    def run(d: Path) -> Path:
        (r,) = [x for x in d.iterdir() if x.is_dir()]
        return r

    names = sorted({d.name.rsplit("-", 1)[0] for d in folder.iterdir() if d.is_dir()})
    return [(run(folder / f"{n}-{a}"), run(folder / f"{n}-{b}")) for n in names
            if (folder / f"{n}-{a}").is_dir() and (folder / f"{n}-{b}").is_dir()]  # fmt: skip


def evaluate(out: Path, max_ratio: float) -> dict[str, object]:
    result: dict[str, object] = {"max_ratio": max_ratio}
    sets = [("same", "a", "b")] + [(d.name, "base", "new") for d in sorted(out.glob("slow*"))]
    for name, a, b in sets:
        rows = []
        for base, new in pairs_of(out / name, a, b):
            rc, mp = compare(base, new, max_ratio)
            # the same pair judged even when a run says disturbed: the statistics' own power
            rc2, mp2 = compare(base, new, max_ratio, "--judge-disturbed")
            rows.append({"exit": rc, "decision": mp.get("decision"), "why": mp.get("why"),
                         "judged_exit": rc2, "judged_decision": mp2.get("decision"),
                         "ratio": round(float(mp2.get("ratio", "nan")), 3),
                         "ci": f"{float(mp2.get('ci_low', 'nan')):.3f}.."
                               f"{float(mp2.get('ci_high', 'nan')):.3f}",
                         "mde": round(float(mp2.get("mde", "nan")), 3)})  # fmt: skip
            print(name, rows[-1], flush=True)
        result[name] = {"pairs": len(rows), "rows": rows}
        for prefix in ("", "judged_"):
            dec = [r[prefix + "decision"] for r in rows]
            ex = [r[prefix + "exit"] for r in rows]
            result[name][prefix + "exit"] = {str(c): ex.count(c) for c in (0, 1, 2, 3)}
            result[name][prefix + "mp800"] = {d: dec.count(d) for d in
                                              ("SAME", "DIFFERENT", "UNKNOWN")}  # fmt: skip
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("out", type=Path)
    c.add_argument("--pairs", type=int, default=20)
    c.add_argument("--trials", type=int, default=5)
    c.add_argument("--shares", default="0.10,0.20")
    e = sub.add_parser("evaluate")
    e.add_argument("out", type=Path)
    e.add_argument("--max-ratio", type=float, default=1.05)
    e.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.cmd == "collect":
        collect(args.out, args.pairs, args.trials, [float(s) for s in args.shares.split(",")])
        return
    res = evaluate(args.out, args.max_ratio)
    summary = {k: {kk: vv for kk, vv in v.items() if kk != "rows"} if isinstance(v, dict)
               else v for k, v in res.items()}  # fmt: skip
    print(json.dumps(summary, indent=1))
    if args.json:
        args.json.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
