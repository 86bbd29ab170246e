"""compare's SAME / DIFFERENT / UNKNOWN over blocks (droidoom.analysis.blocks), on synthetic runs
whose block layout is droidoom's own (scenario.in_blocks, warmup_flags): each block's level
moves by a block-to-block noise (what a host's load does to a run of consecutive writes),
each write around it by a small write noise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_cli_analysis import cli_here  # noqa: F401  (the in-process CLI runner fixture)

from droidoom import analysis, schema, store
from droidoom.analysis import blocks as blockstats
from droidoom.scenario import in_blocks

LEVELS = {"single": 2000.0, "threaded": 3000.0, "multiprocess": 30000.0}
EXIT_SAME, EXIT_REGRESSION, EXIT_BAD_INPUT, EXIT_UNKNOWN = 0, 1, 2, 3


def synth(
    run_id: str,
    *,
    writes: int = 2000,
    block_sd: float = 0.02,
    shift: float = 1.0,
    kinds: tuple[str, ...] = ("single", "threaded", "multiprocess"),
    block: int = 50,
    settle: int = 2,
    population: int = 800,
    seed: int = 0,
) -> pd.DataFrame:
    """One run's samples at one population: `writes` per kind in blocks of `block` (ABBA
    turns, the first `settle` of a block flagged warm-up); multiprocess levels x `shift`."""
    rng = np.random.default_rng(seed)
    per = [[(t, 900, 0)] * writes for t in range(len(kinds))]
    order = [t for t, _, _ in in_blocks(per, block)]
    rows, prev, since, switched, level = [], -1, 0, 0, 0.0
    for seq, t in enumerate(order):
        if t != prev or since >= block:
            # a new block: its level moves with the host
            level = float(rng.normal(0, block_sd))
            since = 0
        switched = switched + 1 if t == prev else 0
        since += 1
        warm = block > 1 and switched < settle  # as scenario.warmup_flags
        prev = t
        kind = kinds[t]
        mean = LEVELS[kind] * (shift if kind == "multiprocess" else 1.0) * np.exp(level)
        rows.append((kind, seq, round(mean * np.exp(rng.normal(0, 0.03))), warm))
    df = pd.DataFrame(rows, columns=["kind", "seq", "latency_ns", "warmup"])
    n = len(df)
    df = df.assign(run_id=run_id, device="synth", mode="reopen", population=population,
                   threads=1, point=0, adj_from=0, adj_to=900, role="cached", t_ns=df["seq"],
                   cpu=0, err=0)  # fmt: skip
    assert len(df) == n
    return schema.coerce(df)


def decision(c: analysis.Comparison, kind: str = "multiprocess") -> dict:
    (row,) = c.table[c.table["kind"].astype(str) == kind].to_dict("records")
    return row


def test_many_steady_blocks_are_same():
    """40 blocks a side at 2% block noise: a 5% change would show, none is there."""
    c = analysis.compare(synth("a", seed=1), synth("b", seed=2), 1.05)
    r = decision(c)
    assert r["decision"] == analysis.SAME, r
    assert r["mde"] <= 1.05 and r["base_blocks"] >= 30 and r["new_blocks"] >= 30, r
    assert r["ci_low"] < 1 < r["ci_high"], r
    assert decision(c, "single")["decision"] == analysis.CONTROL  # the reference, not judged


def test_a_clear_10_percent_shift_over_many_blocks_is_different():
    c = analysis.compare(synth("a", seed=1), synth("b", seed=2, shift=1.10), 1.05)
    r = decision(c)
    assert r["decision"] == analysis.DIFFERENT and r["regression"], r
    assert r["p_value"] <= blockstats.ALPHA and 1.05 < r["ci_low"] and r["ci_high"] < 1.16, r
    assert abs(r["ratio"] - 1.10) < 0.02, r
    assert decision(c, "threaded")["decision"] == analysis.SAME  # untouched kind
    back = analysis.compare(synth("b", seed=2, shift=1.10), synth("a", seed=1), 1.05)
    assert decision(back)["improvement"] and not back.has_regression


def test_few_noisy_blocks_are_unknown_even_with_a_shift():
    """4 blocks a side at 15% block noise: neither SAME (no power) nor DIFFERENT (a rank
    test over 4 + 4 blocks cannot reach p <= 0.01), whatever the ratio says."""
    for shift in (1.0, 1.10):
        base = synth("a", writes=200, block_sd=0.15, seed=3)
        c = analysis.compare(base, synth("b", writes=200, block_sd=0.15, seed=4, shift=shift), 1.05)
        r = decision(c)
        assert r["decision"] == analysis.UNKNOWN and r["why"] == "too few blocks", r
        assert r["mde"] > 1.05
    # enough blocks, but too noisy for a 5% change
    c = analysis.compare(synth("a", block_sd=0.20, seed=5), synth("b", block_sd=0.20, seed=6),
                         1.05)  # fmt: skip
    r = decision(c)
    assert r["decision"] == analysis.UNKNOWN and r["why"] == "too noisy" and r["mde"] > 1.05, r


def test_the_ci_follows_the_blocks_not_the_writes():
    """Between-block variance widens the CI; more blocks narrow it (no fixed allowance):
    the same number of writes in fewer, larger blocks gives a wider CI too."""

    def width(**kw) -> float:
        c = analysis.compare(synth("a", seed=7, **kw), synth("b", seed=8, **kw), 1.05)
        r = decision(c)
        return float(r["ci_high"] - r["ci_low"])

    steady, noisy = width(block_sd=0.01), width(block_sd=0.08)
    assert noisy > 4 * steady, (steady, noisy)
    few, many = width(writes=500, block_sd=0.05), width(writes=4000, block_sd=0.05)
    assert few > 1.8 * many, (few, many)
    assert width(block=400, block_sd=0.05) > 1.8 * width(block=50, block_sd=0.05)


def test_a_disturbed_run_makes_its_points_unknown():
    base, new = synth("a", seed=1), synth("b", seed=2, shift=1.10)
    c = analysis.compare(base, new, 1.05, disturbed={"b"})
    r = decision(c)
    assert r["decision"] == analysis.UNKNOWN and r["why"] == "disturbed" and r["disturbed"], r
    assert not c.has_regression  # a disturbed run does not fail a CI, it asks for a re-run
    assert decision(analysis.compare(base, new, 1.05, disturbed={"other"}))["regression"]


def test_runs_without_blocks_are_cut_into_chunks():
    """Before blocks, kinds took turns write by write: each kind's writes of a point are
    cut into chunks of LEGACY_BLOCK in write order; a one-kind run the same way."""
    old = synth("old", writes=1000, block=1, settle=0).drop(columns="warmup")
    bt = blockstats.block_table(old, ["kind"])
    counts = bt.groupby("kind", observed=True)["count"].agg(["size", "min", "max"])
    assert (counts["size"] == 1000 // blockstats.LEGACY_BLOCK).all(), counts
    assert (counts["min"] == blockstats.LEGACY_BLOCK).all(), counts
    one = synth("one", writes=1000, kinds=("multiprocess",))
    assert len(blockstats.block_table(one, ["kind"])) == 1000 // blockstats.LEGACY_BLOCK
    # blocked runs keep their blocks (ABBA turns put two blocks of a kind side by side)
    new = blockstats.block_table(synth("new", writes=1000), ["kind"])
    assert set(new["count"]) <= {48, 98}, sorted(set(new["count"]))


# --------------------------------------------------------------------------- CLI


def save(df: pd.DataFrame, dest: Path, device: str = "synth", **meta) -> Path:
    """A run directory as the runner writes it."""
    dest.mkdir(parents=True)
    df = df.assign(device=pd.Categorical([device] * len(df)))
    store.write_table(dest / store.SAMPLES, df)
    run_id = str(df["run_id"].iloc[0])
    spec = {"scenario": "lmkd", "populations": [800], "writes": 2000, "block": 50, "settle": 2}
    store.write_json(dest / store.RUN_JSON, {"format": store.FORMAT, "run_id": run_id,
                     "device": device, "status": "complete", "spec": spec, **meta})  # fmt: skip
    return dest


def test_compare_exit_codes(tmp_path, cli_here):  # noqa: F811
    base = save(synth("base", seed=1), tmp_path / "base")
    same = save(synth("same", seed=2), tmp_path / "same")
    slow = save(synth("slow", seed=2, shift=1.10), tmp_path / "slow")
    noisy = save(synth("noisy", writes=200, block_sd=0.15, seed=3), tmp_path / "noisy")
    busy = save(synth("busy", seed=2), tmp_path / "busy",
                notices=["disturbed: load average 9.0 on 2 CPU(s)"])  # fmt: skip
    table = tmp_path / "c.csv"
    rc, out, err = cli_here("compare", base, same, "--max-ratio", "1.05", "--csv", table)
    assert rc == EXIT_SAME, out + err
    assert "every point SAME" in out and "these runs could detect changes of x1.0" in out
    rows = pd.read_csv(table)
    assert set(rows["decision"]) == {"SAME", "control"}, rows
    assert "MDE" in out and "decision" in out
    rc, out, err = cli_here("compare", base, slow, "--max-ratio", "1.05", "--csv", table)
    assert rc == EXIT_REGRESSION and "1 regression(s)" in out, out + err
    assert pd.read_csv(table).set_index("kind").loc["multiprocess", "decision"] == "DIFFERENT"
    assert "(x1.1 relative to single writes)" in " ".join(out.split()), out
    # without the control in the runs the ratio is raw, and the line does not claim otherwise
    two = ("threaded", "multiprocess")
    raw_b = save(synth("rb", seed=1, kinds=two), tmp_path / "rb")
    raw_n = save(synth("rn", seed=2, kinds=two, shift=1.10), tmp_path / "rn")
    rc, out, err = cli_here("compare", raw_b, raw_n, "--max-ratio", "1.05")
    said = " ".join(out.split())
    assert rc == EXIT_REGRESSION and "multiprocess writes at populations 800 (x1.1)" in said, out
    rc, out, err = cli_here("compare", base, noisy, "--max-ratio", "1.05")
    assert rc == EXIT_UNKNOWN and "UNKNOWN (too noisy)" in out, out + err
    assert "more runs per side" in err and "multiprocess 800" in err, err
    rc, out, err = cli_here("compare", base, busy, "--max-ratio", "1.05")
    assert rc == EXIT_UNKNOWN and "disturbed" in err and "load average 9.0" in err, out + err
    rc, out, err = cli_here("compare", base, busy, "--max-ratio", "1.05", "--judge-disturbed")
    assert rc == EXIT_SAME, out + err


def test_compare_pools_runs_per_side(tmp_path, cli_here):  # noqa: F811
    """--base/--new repeat: every run's blocks count; a noisy pair that was UNKNOWN becomes
    SAME with four runs a side."""
    runs = {f"{side}{i}": save(synth(f"{side}{i}", writes=600, block_sd=0.06, seed=10 * i + k),
                               tmp_path / f"{side}{i}")  # fmt: skip
            for k, side in enumerate("bn") for i in range(4)}  # fmt: skip
    table = tmp_path / "c.csv"
    rc, out, err = cli_here("compare", runs["b0"], runs["n0"], "--max-ratio", "1.08",
                            "--csv", table)  # fmt: skip
    assert rc == EXIT_UNKNOWN, out + err
    one = pd.read_csv(table).set_index("kind").loc["multiprocess"]
    args = [a for i in range(4) for a in ("--base", runs[f"b{i}"], "--new", runs[f"n{i}"])]
    rc, out, err = cli_here("compare", *args, "--max-ratio", "1.08", "--csv", table)
    assert rc == EXIT_SAME, out + err
    four = pd.read_csv(table).set_index("kind").loc["multiprocess"]
    assert four["base_blocks"] >= 4 * one["base_blocks"] - 2 and four["mde"] < one["mde"]
    rc, _, err = cli_here("compare", runs["b0"], "--new", runs["n0"])
    assert rc == EXIT_BAD_INPUT and "--base" in err
    # a farm folder a side: its devices differ in their target, and are compared one by one
    for side in "bn":
        save(synth(f"{side}-phone2", seed=7), tmp_path / f"farm-{side}" / "p2", device="phone2")
        shutil.copytree(runs[f"{side}0"], tmp_path / f"farm-{side}" / "p1")
    rc, out, err = cli_here("compare", tmp_path / "farm-b", tmp_path / "farm-n")
    assert rc in (EXIT_SAME, EXIT_UNKNOWN) and "phone2" in out and "synth" in out, out + err
    # runs of another block layout (another fingerprint) do not pool
    other = json.loads((runs["b1"] / store.RUN_JSON).read_text())
    other["spec"]["block"] = 100
    (runs["b1"] / store.RUN_JSON).write_text(json.dumps(other))
    rc, _, err = cli_here("compare", "--base", runs["b0"], "--base", runs["b1"], "--new",
                          runs["n0"])  # fmt: skip
    assert rc == EXIT_BAD_INPUT and "cannot pool" in err, err


@pytest.mark.parametrize("n", [3, 4])
def test_mde_is_infinite_when_the_rank_test_cannot_reach_alpha(n):
    """n + n blocks: Mann-Whitney's smallest two-sided p is 2 / C(2n, n) (0.1 for 3 + 3,
    0.029 for 4 + 4), never <= 0.01: such runs can say nothing, however steady."""
    steady = [np.full(n, 1000.0) + np.arange(n)] * 2
    assert blockstats.mde(steady) == float("inf")
    assert blockstats.mde([np.full(5, 1000.0) + np.arange(5)] * 2) < 1.05


def test_profile_repeat_makes_complete_runs_that_compare_pools(tmp_path, cli_here):  # noqa: F811
    """`profile --repeat 2` on this host: two complete run directories of one spec, which
    `compare --base DIR --new DIR` pools (each side's blocks from both runs)."""
    rc, out, err = cli_here("profile", "--local", "--kinds", "single,multiprocess",
                            "--population", "0", "--writes", "300", "--repeat", "2",
                            "--out", tmp_path / "runs")  # fmt: skip
    assert rc == EXIT_SAME, out + err
    runs = sorted(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    assert len(runs) == 2 and "run 2 of 2" in out
    assert all(store.read_run(r).status == "complete" for r in runs)
    table = tmp_path / "c.csv"
    rc, out, err = cli_here("compare", "--base", tmp_path / "runs", "--new", runs[1],
                            "--csv", table, "--judge-disturbed")  # fmt: skip
    assert rc in (EXIT_SAME, EXIT_UNKNOWN), out + err  # a busy host may leave it UNKNOWN
    mp = pd.read_csv(table).set_index("kind").loc["multiprocess"]
    assert mp["base_blocks"] >= 2 * mp["new_blocks"] - 2, mp  # both runs' blocks on BASE
    rc, _, err = cli_here("profile", "--local", "--repeat", "0", "--out", tmp_path / "x")
    assert rc == EXIT_BAD_INPUT and "--repeat must be 1..100" in err


def test_runs_that_sit_at_different_levels_widen_a_pooled_side():
    """Three runs a side, steady blocks, each run at its own level (+-6%): read as one pool
    of blocks a level shift looks certain; clustered by run, the CI and the MDE carry the
    between-run spread and the pair is not DIFFERENT."""
    rng = np.random.default_rng(5)

    def side(levels: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([1e4 * lv * np.exp(rng.normal(0, 0.01, 30)) for lv in levels])
        return x, np.repeat([f"r{lv}" for lv in levels], 30)

    (b, rb), (n, rn) = side((1.0, 1.06, 0.95)), side((1.08, 1.02, 1.12))
    flat = blockstats.decide(b, n)
    clustered = blockstats.decide(b, n, runs=[rb, rn])
    assert flat.decision(1.05) == "DIFFERENT", flat  # what ignoring the runs would say
    assert clustered.decision(1.05) != "DIFFERENT", clustered
    assert clustered.mde > 1.05 > flat.mde, (flat, clustered)
    width = clustered.ci_high - clustered.ci_low
    assert width > 3 * (flat.ci_high - flat.ci_low), (flat, clustered)


def _swept(run_id: str, top_shift: float, moves: float, seed: int) -> pd.DataFrame:
    """A run of the sweep 400, 800, 400 (the top visited once): multiprocess at the second
    visit of 400 x `moves` (its level moved with time), at 800 x `top_shift`."""
    parts = []
    for point, (pop, shift) in enumerate([(400, 1.0), (800, top_shift), (400, moves)]):
        df = synth(run_id, writes=1500, shift=shift, population=pop, seed=seed + point)
        parts.append(df.assign(point=point, seq=df["seq"] + point * 100_000))
    return schema.coerce(pd.concat(parts, ignore_index=True))


def test_a_point_visited_once_carries_the_time_level_spread():
    """Two runs of one lab kernel once came out DIFFERENT at the sweep's top (x1.14, CI
    1.14..1.15): its blocks share one stretch of time, so they cannot show how far a level
    moves with time, which the points visited twice do (here 15% between the up and down
    visit of 400). With that spread the same shift is not a change; with steady revisits
    it is one."""
    moving = analysis.compare(_swept("b", 1.0, 1.15, 1), _swept("n", 1.14, 1.15, 7),
                              max_ratio=1.10)  # fmt: skip
    row = moving.table[(moving.table["kind"].astype(str) == "multiprocess")
                       & (moving.table["population"].astype(int) == 800)].iloc[0]  # fmt: skip
    assert row["decision"] != "DIFFERENT" and row["ci_low"] < 1 < row["ci_high"], row
    assert row["mde"] > 1.14, row
    steady = analysis.compare(_swept("b", 1.0, 1.0, 1), _swept("n", 1.14, 1.0, 7),
                              max_ratio=1.10)  # fmt: skip
    row = steady.table[(steady.table["kind"].astype(str) == "multiprocess")
                       & (steady.table["population"].astype(int) == 800)].iloc[0]  # fmt: skip
    assert row["decision"] == "DIFFERENT" and row["ratio"] > 1.10, row
