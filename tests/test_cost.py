"""`droidoom cost TRACE --run RUN`: the estimate against real replays of the same trace, on
this host's kernel and on the kernel lab's "fixed" and "regressed" 6.1 kernels (QEMU)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import measure_again, run_cli

import droidoom
from droidoom.analysis import cost as c
from droidoom.traces import replay
from droidoom.traces.synth import SynthSpec, generate


@pytest.fixture(scope="module")
def trace(tmp_path_factory) -> Path:
    data, _ = generate(SynthSpec(seed=3, duration_s=1800))  # ~2500 updates in 30 min
    path = tmp_path_factory.mktemp("traces") / "phone.pftrace"
    path.write_bytes(data)
    return path


def _one_run(out: Path) -> Path:
    (run,) = [d for d in out.iterdir() if d.is_dir()]
    return run


def _replay(trace: Path, out: Path, *args: str, timeout: float = 300) -> Path:
    p = run_cli("profile", "--scenario", f"replay:{trace}", "--compress", "0", "--out", str(out),
                *args, timeout=timeout)  # fmt: skip
    assert p.returncode == 0, p.stderr + p.stdout
    return _one_run(out)


def _cost(trace: Path, runs: list[Path], tmp: Path) -> dict:
    out = tmp / "cost.json"
    p = run_cli("cost", str(trace), *[a for r in runs for a in ("--run", str(r))],
                "--json", str(out))  # fmt: skip
    assert p.returncode == 0, p.stderr + p.stdout
    assert "ms/hour" in p.stdout and "where it goes" in " ".join(p.stdout.split())
    return json.loads(out.read_text())


def test_estimate_matches_a_real_replay_on_this_host(trace, tmp_path):
    """A replay at three populations (each replayed twice, up and down) fits its mean
    line per kind; at each population the line's estimate of the whole replay and the
    replay's measured total agree: the measured total lies in the estimate's 95% CI. (Not
    "within 10%": a 2-core host's load moves the two apart by more, and the CI says how
    much is expected.) A 95% interval misses now and then, more often under load: a miss
    is measured again, up to three runs; a biased estimate would miss every time."""

    def measure(attempt: int) -> tuple[dict, dict]:
        run = _replay(trace, tmp_path / f"runs{attempt}", "--local", "--population",
                      "0,400,800", "--replay-kinds", "threaded,multiprocess")  # fmt: skip
        rep = _cost(trace, [run], tmp_path)
        (r,) = rep["runs"]
        return rep, r

    def inside(result: tuple[dict, dict]) -> bool:
        return all(p["measured_in_estimate_ci"] for e in result[1]["estimates"]
                   for p in e["replays"])  # fmt: skip

    (rep, r), _ = measure_again(measure, inside)
    assert r["replay_of_this_trace"]
    n = rep["trace"]["updates"]
    assert {e["kind"] for e in r["estimates"]} == {"threaded", "multiprocess"}
    for e in r["estimates"]:
        assert [p["population"] for p in e["replays"]] == [0, 400, 800]
        for p in e["replays"]:
            assert p["writes"] == n
            assert p["measured_in_estimate_ci"], (e["kind"], p)
        lo, hi = e["ci_ms_per_hour"]
        assert 0 <= lo <= e["cpu_ms_per_hour"] <= hi
        # per hour = the trace's writes at its own population, scaled to 3600 s
        per_hour = e["per_write_ns"] * n * 3600 / rep["trace"]["duration_s"] / 1e6
        assert e["cpu_ms_per_hour"] == pytest.approx(per_hour)
    mp = {e["kind"]: e for e in r["estimates"]}["multiprocess"]
    assert mp["slope_ns"] > 5  # the walk this kernel still does for CLONE_VM sharers
    tr = r["where"]["transitions"]
    assert tr[0]["share"] >= tr[-1]["share"] and sum(t["share"] for t in tr) <= 1 + 1e-9
    assert r["where"]["bursts"][0]["writes"] > 1


def test_estimate_lies_in_the_replay_ci_measured_alongside(trace, tmp_path):
    """`--repeat 5` at the trace's own population: five plays of the trace, each right after
    a sweep point of the lmkd role model on the same targets. The sweep points' mean prices
    the trace (the estimate); the plays' spread is the measured total's CI (Student t, 4
    degrees of freedom), so drift and load changes count. Measured alongside, both see the
    same machine, and the estimate lies in the measured CI, for the O(1) threaded writes
    and the multiprocess ones that walk every process. A 95% interval misses now and then
    (more often when another job loads the host meanwhile): a miss is measured again, up
    to three runs; a biased estimate would miss every time."""
    misses: list[tuple[str, dict]] = []

    def hit(run: Path) -> bool:
        rep = _cost(trace, [run], tmp_path)
        (r,) = rep["runs"]
        assert r["replay_of_this_trace"] and r["sweep_points"] == 5
        n, pop = rep["trace"]["updates"], rep["trace"]["population"]
        missed = []
        for e in r["estimates"]:
            (p,) = e["replays"]
            assert (p["population"], p["writes"], p["plays"], p["ci"]) == (pop, n, 5, "plays")
            lo, hi = p["measured_ci_ns"]
            assert 0 < lo < p["measured_ns"] < hi, p
            if not p["estimate_in_measured_ci"]:
                missed.append((e["kind"], p))
        misses.extend(missed)
        return not missed

    run, inside = measure_again(  # a 95% check: measured again (as a user would) on a miss
        lambda a: _replay(trace, tmp_path / f"runs{a}", "--local", "--repeat", "5",
                          "--replay-kinds", "threaded,multiprocess"),
        hit,
    )  # fmt: skip
    assert inside, f"the estimate missed the measured CI in 3 runs: {misses}"
    df = droidoom.load(run)  # the plays wrote the trace's own values, the sweeps did not
    sweep = df["point"].isin(json.loads((run / "run.json").read_text())["replay"]["sweep_points"])
    want = replay.load(trace).events["adj"].to_numpy()
    for _, g in df[~sweep & (df["kind"] == "threaded")].groupby("point"):
        assert (g.sort_values("seq")["adj_to"].to_numpy() == want).all()
    assert df[sweep & (df["kind"] == "threaded")].groupby("point").size().eq(len(want)).all()


def test_measured_ci_is_the_spread_of_the_plays():
    """With >= 3 plays the CI is the t interval over the plays' totals; with fewer it comes
    from time blocks of the writes (within-run only)."""
    rows = []
    for point, ns in enumerate((1000, 1100, 1300)):  # three plays of 40 writes
        rows += [dict(kind="threaded", mode="reopen", population=0, point=point, err=0,
                      t_ns=point * 100 + i, latency_ns=ns) for i in range(40)]  # fmt: skip
    df = pd.DataFrame(rows)
    (m,) = c.measured(df)
    tots = np.array([1000, 1100, 1300]) * 40.0
    half = 4.3027 * tots.std(ddof=1) / np.sqrt(3)  # t(2, 0.975)
    assert (m.plays, m.ci, m.writes) == (3, "plays", 40)
    assert (m.total_lo, m.total_hi) == pytest.approx((tots.mean() - half, tots.mean() + half),
                                                     rel=1e-4)
    (m2,) = c.measured(df[df["point"] < 2])
    assert (m2.plays, m2.ci) == (2, "blocks")


def test_cost_model_sums_per_write_costs(trace):
    """estimate() == the sum of each write's modelled cost (a linear model's mean)."""
    rt = replay.load(trace)
    fit = c.MeanFit("d", "threaded", "reopen", 500.0, 40.0, ((4.0, 0.0), (0.0, 0.01)), 5, 6,
                    0, 800)  # fmt: skip
    e = c.estimate(fit, rt.extra, rt.duration_ns)
    assert e.total_ns == pytest.approx(c.per_write_cost(fit, rt.extra).sum())
    assert e.per_hour(e.total_ns) == pytest.approx(e.total_ns * 3600e9 / rt.duration_ns)
    se = np.sqrt(4.0 + 0.01 * e.x_mean**2) * e.writes
    assert e.total_hi - e.total_ns == pytest.approx(se * 2.5706, rel=1e-3)  # t(5, 0.975)


needs_qemu = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None,
                                reason="apt-get install qemu-system-x86 (see .ci/run)")


@pytest.fixture(scope="module")
def lab_kernels() -> dict[str, Path]:
    from droidoom.lab import build

    return {v: build.build(v).image for v in build.VARIANTS}


@pytest.mark.lab
@needs_qemu
def test_regressed_kernel_estimate_and_replay_grow_as_the_slope_says(lab_kernels, tmp_path):
    """On the lab's regressed kernel the trace's threaded writes walk every process: the
    slope fitted to the sweep points predicts how much a play of the trace grows from 0 to
    400 extra processes, and the plays grow that much; on the fixed kernel they stay flat.
    `--repeat` measures the sweep points and the plays in turn in one run, so the slope and
    the plays see the same emulated machine (TCG's speed follows the host's load, which
    differs between separate runs). A burst of host load can still slow one population's
    plays several-fold (seen: 364 us/write at 0 extra processes, 74 at 200): a miss is
    measured again, up to three times; a wrong prediction would miss every time."""
    data, _ = generate(SynthSpec(seed=5, duration_s=600))
    trace = tmp_path / "phone.pftrace"
    trace.write_bytes(data)
    vm = ("--accel", "tcg")
    n = len(replay.load(trace).events)
    growth: dict[str, float] = {}
    fits: dict[str, c.MeanFit] = {}
    seen: list[tuple[dict, float]] = []

    def measure(attempt: int) -> dict[str, Path]:
        # over the range it prices (under TCG the walk's means bend up by 800)
        runs = {
            v: _replay(trace, tmp_path / f"{v}{attempt}", "--kernel", str(lab_kernels[v]),
                       *vm, "--population", "0,200,400", "--repeat", "3", timeout=900)
            for v in ("regressed", "fixed")
        }  # fmt: skip
        for v, run in runs.items():
            meta = json.loads((run / "run.json").read_text())
            sweeps, plays = c.split_sweep(droidoom.load(run), meta)
            (fits[v],) = c.mean_fits(sweeps)
            m = {x.population: x for x in c.measured(plays, sweeps=sweeps)}
            assert min(x.plays for x in m.values()) >= 3, m  # 3 per visit (up and down)
            growth[v] = (m[400].total_ns - m[0].total_ns) / n  # ns per write, 0 -> 400
        seen.append((dict(growth), fits["regressed"].slope_ns * 400))
        return runs

    def as_predicted(_: dict[str, Path]) -> bool:
        return 0.5 < growth["regressed"] / (fits["regressed"].slope_ns * 400) < 2

    runs, hit = measure_again(measure, as_predicted)
    assert hit, f"(growth, predicted) in 3 runs: {seen}"
    fit = fits["regressed"]
    assert fit.slope_ns > 20  # the walk, under TCG ~100+ ns per process
    predicted = fit.slope_ns * 400
    assert growth["fixed"] < 0.25 * growth["regressed"], growth
    assert fits["fixed"].slope_ns < 0.25 * fit.slope_ns, fits
    # the estimate grows the same way: cost at 400 - cost at 0 = slope x 400 per write
    e0, e400 = (c.estimate(fit, np.full(n, x), 1).total_ns / n for x in (0, 400))
    assert e400 - e0 == pytest.approx(predicted)
    # one command prices the trace on both kernels (and checks each against its plays)
    rep = _cost(trace, [runs["fixed"], runs["regressed"]], tmp_path)
    est = [r["estimates"][0] for r in rep["runs"]]
    # each kernel's line is its own run's (absolute ms/hour across two TCG runs follow the
    # host's load); the walk is what separates them
    assert est[0]["slope_ns"] < 0.25 * est[1]["slope_ns"], est
    assert est[1]["slope_ns"] == pytest.approx(fit.slope_ns), est
    assert [r["replay_of_this_trace"] for r in rep["runs"]] == [True, True]


def test_cost_bad_options_are_one_line_exit_2(trace, tmp_path):
    run = _replay(trace, tmp_path / "runs", "--local", "--population", "0")
    p = run_cli("cost", str(trace), "--run", str(run), "--trim", "1.5")
    assert p.returncode == 2 and "--trim must be a share" in " ".join(p.stderr.split())
    p = run_cli("cost", str(trace), "--run", str(run), "--kind", "multiprocess")
    assert p.returncode == 2 and "pick --kind from threaded" in " ".join(p.stderr.split())
    p = run_cli("cost", str(trace), "--run", str(tmp_path / "nope"))
    assert p.returncode == 2 and "Traceback" not in p.stderr
