"""droidoom.analysis on real runs of this host (fixtures from conftest.py).

This VM's kernel (6.x) carries the MMF_MULTIPROCESS fix, so: threaded writes are O(1),
multiprocess writes walk every process (O(N)), and a run profiled while 1600 extra processes
exist (`slow_run`) has genuinely slower multiprocess writes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import (
    HOST_VERDICT,
    measure_again,
    profile_with_background,
    require_slow_premise,
    skip_busy,
    verdict_of,
)

import droidoom
from droidoom import analysis
from droidoom.errors import DataError, UsageError

KEYS = list(analysis.GROUP_KEYS)


def lmkd_mode(df: pd.DataFrame) -> str:
    modes = set(df["mode"].astype(str))
    return "reopen" if "reopen" in modes else sorted(modes)[0]


def fits_by_kind(df: pd.DataFrame) -> dict[str, analysis.Fit]:
    mode = lmkd_mode(df)
    return {f.kind: f for f in analysis.fits(df) if f.mode == mode}


# --------------------------------------------------------------------------- summary


def test_summary_matches_pandas_reference(local_run_df):
    df = local_run_df
    got = analysis.summary(df).set_index(KEYS)
    ok = df[(df["err"] == 0) & ~df["warmup"]]  # warm-ups after a switch of kind don't count
    g = ok.groupby(KEYS, observed=True)["latency_ns"]
    ref = g.quantile(list(analysis.QUANTILES.values())).unstack()
    ref.columns = list(analysis.QUANTILES)
    ref = ref.reindex(got.index)
    for col in analysis.QUANTILES:
        np.testing.assert_allclose(got[col], ref[col], err_msg=col)
    mad = (ok["latency_ns"] - g.transform("median")).abs()
    mad = mad.groupby([ok[k] for k in KEYS], observed=True).median().reindex(got.index)
    np.testing.assert_allclose(got["mad_ns"], mad)
    np.testing.assert_array_equal(got["min_ns"], g.min().reindex(got.index))
    np.testing.assert_array_equal(got["max_ns"], g.max().reindex(got.index))
    assert got["count"].sum() + got["errors"].sum() == len(df) - df["warmup"].sum()
    # one row per device x kind x mode x population of the run
    assert len(got) == len(df[KEYS].drop_duplicates())


def test_summary_is_ordered_and_positive(local_run_df):
    s = analysis.summary(local_run_df)
    cols = ["min_ns", "p10_ns", "p25_ns", "median_ns", "p75_ns", "p90_ns", "p99_ns", "max_ns"]
    assert (s[cols].diff(axis=1).iloc[:, 1:] >= 0).all().all()
    assert (s["min_ns"] > 0).all() and (s["mad_ns"] >= 0).all()
    assert list(s["kind"].cat.categories)[:3] == ["single", "threaded", "multiprocess"]


def test_summary_of_repeated_rows_keeps_quantiles(local_run_df):
    """2M real writes (the run's rows repeated, shuffled): the packed-sort path gives the same
    statistics as the small frame. Speed is benchmarks/bench_analysis.py's job, not a test's."""
    reps = -(-2_000_000 // len(local_run_df))
    rows = np.random.default_rng(0).permutation(np.tile(np.arange(len(local_run_df)), reps))
    big = local_run_df.iloc[rows].reset_index(drop=True)
    s = analysis.summary(big)
    assert s["count"].sum() + s["errors"].sum() == len(big) - big["warmup"].sum()
    small = analysis.summary(local_run_df)
    # repeating every row keeps each group's quantiles (up to interpolation) and its MAD
    for col in ("median_ns", "p90_ns", "mad_ns", "min_ns", "max_ns"):
        np.testing.assert_allclose(s[col], small[col], rtol=0.02, err_msg=col)
    np.testing.assert_array_equal(s["count"], small["count"] * reps)


# --------------------------------------------------------------------------- scaling


def test_scaling_threaded_flat_multiprocess_walks(local_run_df):
    sc = analysis.scaling(local_run_df)
    sc = sc[sc["mode"] == lmkd_mode(local_run_df)].set_index("kind")
    assert (sc["n_populations"] >= analysis.MIN_POPULATIONS).all()
    t, m = sc.loc["threaded"], sc.loc["multiprocess"]
    assert t["complexity"] == "O(1)", t["reason"]
    assert abs(t["growth"]) <= analysis.O1_MAX_GROWTH
    assert t["ci_high"] < analysis.WALK_MIN_SLOPE_NS
    assert m["complexity"] == "O(N)", m["reason"]
    assert 0 < m["ci_low"] <= m["slope_ns"] <= m["ci_high"]
    # a walk over task structs: tens of ns per process on x86, never sub-ns or microseconds
    assert analysis.WALK_MIN_SLOPE_NS <= m["slope_ns"] < 1000
    # The walk is linear in the number of processes: the lower and upper halves of the sweep
    # climb alike (a step or a curve would not). Per-population medians pool the up and down
    # visits, so one block slowed by host load moves this little (r2 over 5 points would).
    df = local_run_df[(local_run_df["kind"] == "multiprocess")
                      & (local_run_df["mode"] == lmkd_mode(local_run_df))]  # fmt: skip
    med = df.groupby("population", observed=True)["latency_ns"].median().sort_index()
    lo, mid, hi = med.index[0], med.index[len(med) // 2], med.index[-1]
    lower, upper = ((med[b] - med[a]) / (b - a) for a, b in ((lo, mid), (mid, hi)))
    assert 1 / 3 < lower / upper < 3, med.to_dict()


def test_scaling_needs_three_populations(local_run_df):
    pops = sorted(local_run_df["population"].unique())
    two = local_run_df[local_run_df["population"].isin([pops[0], pops[-1]])]
    sc = analysis.scaling(two)
    assert (sc["complexity"] == "inconclusive").all()
    assert sc["slope_ns"].isna().all()
    assert sc["reason"].str.contains("needs >= 3 populations").all()


# --------------------------------------------------------------------------- verdict


def test_verdict_fixed_and_consistent_with_this_kernel(local_run, local_run_df):
    meta = analysis.load_meta(local_run)
    (v,) = analysis.verdict(local_run_df, meta)
    assert v.device == str(local_run_df["device"].iloc[0])
    assert v.status == HOST_VERDICT, v.sentence
    assert v.control_ok and v.multiprocess.ci_low > 0
    assert v.kernel_release == os.uname().release == meta["target"]["kernel_release"]
    assert v.expectation == HOST_VERDICT and v.consistent is True
    assert "MMF_MULTIPROCESS" in v.sentence
    if HOST_VERDICT == "fixed":
        assert v.threaded.complexity == "O(1)" and "O(1)" in v.sentence
        assert "post-fix: consistent." in v.sentence  # (a drift note may follow)


def test_verdict_without_multiprocess_control_is_inconclusive(local_run, local_run_df):
    """Threaded O(1) alone proves nothing: the sweep might be too small to show a walk."""
    df = local_run_df[local_run_df["kind"] != "multiprocess"]
    (v,) = analysis.verdict(df, analysis.load_meta(local_run))
    assert v.status == "inconclusive"
    assert not v.control_ok and v.multiprocess is None
    assert "positive control" in v.sentence and v.consistent is None


@pytest.mark.timing
def test_verdict_of_slow_run_still_fixed(slow_run, tmp_path):
    """1600 background processes raise every multiprocess write; the slope is unchanged.
    Their walk only grows ~50% over the quick sweep, so one block of writes slowed by a
    busy host hides it (the verdict then says `disturbed`): measure again, as a user would."""
    verdicts: list[analysis.Verdict] = []

    def settled(run: Path) -> bool:
        verdicts.append(verdict_of(run))
        return not verdicts[-1].disturbed

    _, quiet = measure_again(
        lambda a: profile_with_background(tmp_path / f"again{a}", tmp_path) if a else slow_run,
        settled,
    )
    if not quiet:
        skip_busy(f"the host stayed busy over three slow runs: {[v.sentence for v in verdicts]}")
    v = verdicts[-1]
    assert v.status == HOST_VERDICT, v.sentence
    assert v.multiprocess.ci_low >= analysis.WALK_MIN_SLOPE_NS


@pytest.mark.parametrize(
    "release, expected",
    [
        ("6.18.44-fc-v669", "fixed"),
        ("5.10.43-android12-9-00001-g1234", "fixed"),
        ("5.4.61-android11-2-g0abc", "regressed"),
        ("5.4.73", "fixed"),
        ("4.19.152-perf+", "regressed"),
        ("4.19.153", "fixed"),
        ("4.14.202", "regressed"),
        ("4.14.203-g5eb1f1f", "fixed"),
        ("4.9.337-ga1b2c3", "regressed"),
        ("4.8.0", "regressed"),
        ("4.4.302-android", "unaffected"),
        ("3.18.140", "unaffected"),
        ("Linux version 4.19.113-gabc (build@host)", "regressed"),
        ("", "unknown"),
        (None, "unknown"),
        ("unknown", "unknown"),
    ],
)
def test_kernel_expectation(release, expected):
    assert analysis.kernel_expectation(release) == expected


def test_verdict_negative_control(local_run, local_run_df):
    """Single-threaded writes never walk: if they grow with the population, the host was
    disturbed and nothing can be concluded. Here the real run's single writes get 50 ns per
    process added, what a contended CPU or a foreign oom_adj_mutex holder looks like."""
    df = local_run_df.copy()
    single = (df["kind"] == "single").to_numpy()
    # walk-sized (the verdict ignores drift below a quarter of the in-run walk's slope)
    per_process = max(50, int(fits_by_kind(local_run_df)["multiprocess"].slope_ns))
    df.loc[single, "latency_ns"] += per_process * df.loc[single, "population"].astype("int64")
    (clean,) = analysis.verdict(local_run_df, analysis.load_meta(local_run))
    (v,) = analysis.verdict(df, analysis.load_meta(local_run))
    assert not clean.disturbed and clean.single.complexity == "O(1)"
    assert v.disturbed and v.single.complexity == "O(N)"
    assert v.status == "inconclusive" and v.consistent is None
    assert "never walk" in v.sentence and "re-run" in v.sentence
    # without single writes there is no negative control, and no objection
    (w,) = analysis.verdict(df[~single], analysis.load_meta(local_run))
    assert w.single is None and not w.disturbed and w.status == clean.status


def test_verdict_says_when_the_control_is_too_noisy(local_run, local_run_df):
    """One block of multiprocess writes slowed by host load (as high as the top point):
    the control still walks by its point estimate but its CI fails. The verdict says the
    device was busy and asks for a re-run, rather than blaming the populations."""
    df = local_run_df.copy()
    mp = (df["kind"] == "multiprocess").to_numpy()
    first = mp & (df["point"] == df["point"].min()).to_numpy()
    top = df.loc[mp & (df["population"] == df["population"].max()).to_numpy(), "latency_ns"]
    factor = 1.2 * top.median() / df.loc[first, "latency_ns"].median()
    df.loc[first, "latency_ns"] = (df.loc[first, "latency_ns"] * factor).astype("int64")
    (v,) = analysis.verdict(df, analysis.load_meta(local_run))
    assert v.multiprocess.slope_ns >= analysis.WALK_MIN_SLOPE_NS > v.multiprocess.ci_low
    assert v.status == "inconclusive" and v.disturbed, v.sentence
    assert "too unevenly" in v.sentence and "re-run" in v.sentence
    assert "too small" not in v.sentence


# --------------------------------------------------------------------------- compare


@pytest.mark.timing
def test_compare_flags_the_slow_run(local_run, local_run_df, slow_run):
    require_slow_premise(local_run, slow_run)
    slow = droidoom.load(slow_run)
    c = analysis.compare(local_run_df, slow)
    assert c.has_regression
    mp = c.table[c.table["kind"] == "multiprocess"]
    assert len(mp) >= 3 and mp["regression"].all()
    # Each multiprocess write walks 1600 more processes. The in-run control is the kind
    # that skips the walk (single on any kernel): what load drifts between the two runs
    # moves it too, and it stays small next to what the walk adds (no absolute ns bound).
    control = c.table[c.table["kind"] == "single"]
    drift = (control["new_median_ns"] - control["base_median_ns"]).abs()
    assert drift.max() < 0.5 * (mp["new_median_ns"] - mp["base_median_ns"]).min(), control
    # and the other way round the same groups are improvements
    back = analysis.compare(slow, local_run_df)
    assert back.improvements["kind"].astype(str).eq("multiprocess").sum() == len(mp)


@pytest.mark.timing
def test_compare_pooled_over_populations(local_run, local_run_df, slow_run):
    require_slow_premise(local_run, slow_run)
    c = analysis.compare(local_run_df, droidoom.load(slow_run), by=("device", "kind", "mode"))
    assert "population" not in c.table.columns
    assert set(c.regressions["kind"].astype(str)) >= {"multiprocess"}


def test_compare_without_overlap_raises(local_run_df):
    df = local_run_df
    with pytest.raises(DataError, match="share no"):
        analysis.compare(df[df["kind"] == "single"], df[df["kind"] == "threaded"])


def test_compare_pairs_two_device_names(local_run_df):
    df = local_run_df
    other = df.assign(device=pd.Categorical(["phone-b"] * len(df)))
    with pytest.raises(DataError, match="pair_devices=True"):
        analysis.compare(df, other)
    c = analysis.compare(df, other, pair_devices=True)
    assert c.paired == (str(df["device"].iloc[0]), "phone-b")
    assert not c.has_regression and len(c.table) == len(df[KEYS].drop_duplicates())


def test_compare_rejects_bad_threshold(local_run_df):
    with pytest.raises(UsageError):
        analysis.compare(local_run_df, local_run_df, max_ratio=0.9)


def test_a_run_beside_another_runs_population_says_disturbed(slow_run):
    """slow_run ran while another droidoom helper kept 1600 processes alive. Such a run said
    FIXED with `notices: []`; it now says what else ran, in run.json's notices and the
    verdict."""
    meta = analysis.load_meta(slow_run)
    v = verdict_of(slow_run)
    assert v.busy and "droidoom-helper processes of another run" in v.busy[0], v.sentence
    assert "Disturbed: " in v.sentence
    assert any(n.startswith("disturbed: ") and "another run" in n for n in meta["notices"])


def test_disturbances_from_device_activity():
    from droidoom.analysis.drift import disturbances

    def meta(before: dict, after: dict, cpus: int = 2) -> dict:
        return {"device_activity": {"before": before, "after": after}, "target": {"cpus": cpus}}

    quiet = {"procs": 100, "helpers": 0, "loadavg": "0.50 0.40 0.30"}
    assert disturbances(meta(quiet, quiet)) == []
    assert disturbances({}) == [] and disturbances({"device_activity": "junk"}) == []
    moved = disturbances(meta(quiet, {**quiet, "procs": 180}))
    assert moved == ["the target's process count moved 100 -> 180 during the run"]
    (busy,) = disturbances(meta(quiet, {**quiet, "loadavg": "9.0 4.0 2.0"}))
    assert busy == "load average 9.0 on 2 CPU(s)"
    assert disturbances(meta(quiet, {**quiet, "loadavg": "4.5 1 1"})) == []  # a hog: 2 x 2 + 1
