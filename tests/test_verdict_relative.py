"""The verdict compares threaded writes with the in-run multiprocess slope; compare looks at
what a kernel change changes (latency relative to `single`, slopes) with a between-run floor.

Inputs are this host's real quick run (conftest `local_run`), changed only where a test says
how; the fit-level case is the farm run that was reported "inconclusive" before.
"""

from __future__ import annotations

import numpy as np

from droidoom import analysis
from droidoom.analysis.verdicts import Fit


def _fit(kind, slope, lo, hi, base, complexity, span=800):
    growth = slope * span / base
    return Fit("phone", kind, "reopen", slope, lo, hi, base, base, growth, 0.9, 3, 3, 0, span,
               complexity, "")  # fmt: skip


def test_flat_threaded_next_to_a_walking_control_is_fixed():
    """The farm run: threaded -0.02 ns/process (CI -6..6) vs multiprocess +86 ns/process.
    The CI's high end (6 ns) exceeds the absolute walk floor, so the old rule said
    "inconclusive"; it is 7% of what a walk costs on that phone, so: fixed."""
    fitted = [
        _fit("single", 0.1, -3, 3, 3000, "O(1)"),
        _fit("threaded", -0.02, -6, 6, 3200, "inconclusive"),
        _fit("multiprocess", 86, 80, 92, 3500, "O(N)"),
    ]
    (v,) = analysis.verdict(None, {"device": "phone", "target": {"kernel_release": "5.10.43"}},
                            fitted=fitted)  # fmt: skip
    assert v.status == "fixed" and v.consistent is True, v.sentence
    assert "multiprocess control" in v.sentence


def test_threaded_walking_like_the_control_is_regressed():
    fitted = [
        _fit("threaded", 70, 60, 80, 3200, "O(N)"),
        _fit("multiprocess", 86, 80, 92, 3500, "O(N)"),
    ]
    (v,) = analysis.verdict(None, {"device": "phone", "target": {"kernel_release": "6.1.192"}},
                            fitted=fitted)  # fmt: skip
    assert v.status == "regressed" and v.consistent is False
    assert "post-fix by version, yet threaded writes walk" in v.sentence


def test_threaded_in_between_stays_inconclusive():
    fitted = [
        _fit("threaded", 30, 10, 50, 3200, "O(N)"),  # neither clearly flat nor a full walk
        _fit("multiprocess", 86, 80, 92, 3500, "O(N)"),
    ]
    fitted[0] = _fit("threaded", 30, 10, 50, 3200, "inconclusive")
    (v,) = analysis.verdict(None, {"device": "phone"}, fitted=fitted)
    assert v.status == "inconclusive"


def test_compare_a_slower_day_is_not_a_regression(local_run_df):
    """Every write 30% slower (a busier machine, another day): relative to the in-run
    single control nothing changed, and raw single latency stays within the stated floor."""
    slower = local_run_df.copy()
    slower["latency_ns"] = (slower["latency_ns"] * 1.3).round().astype(slower["latency_ns"].dtype)
    c = analysis.compare(local_run_df, slower)
    assert not c.has_regression, c.table[c.table["regression"]]
    rel = c.table[c.table["basis"] == "vs single"]
    assert len(rel) and np.allclose(rel["ratio"], 1, atol=0.02)
    assert np.allclose(c.table["raw_ratio"], 1.3, atol=0.02)


def test_compare_names_a_kind_that_starts_to_walk(local_run_df):
    """Threaded writes that gain 40 ns per extra process (a walk) regress by slope."""
    df = local_run_df.copy()
    th = (df["kind"] == "threaded").to_numpy()
    df.loc[th, "latency_ns"] += 40 * df.loc[th, "population"].astype("int64")
    c = analysis.compare(local_run_df, df)
    assert c.has_regression
    assert set(c.slope_regressions["kind"].astype(str)) == {"threaded"}
    assert not analysis.compare(local_run_df, local_run_df).has_regression


def test_compare_tolerates_one_disturbed_block(local_run_df):
    """Seen under TCG on a loaded host: one point's blocks ran 2x slow (host load burst)
    while nothing changed in the kernel. Kinds take turns in blocks within a point, so a
    burst that long slows every kind's blocks of it. Each kind is taken relative to the
    control's blocks of the same point (before blocks were the unit, a stated floor widened
    by the run's control scatter did this): the burst cancels, no regression either way
    round."""
    df = local_run_df.copy()
    mid = sorted(df["population"].unique())[1]
    hit = (df["population"] == mid).to_numpy()
    df.loc[hit, "latency_ns"] *= 2
    for base, new in ((local_run_df, df), (df, local_run_df)):
        c = analysis.compare(base, new)
        assert not c.table["regression"].any(), c.table[c.table["regression"]]
        t = c.table
        for kind in ("threaded", "multiprocess"):
            (r,) = t[(t["kind"] == kind) & (t["population"] == mid)].to_dict("records")
            assert r["basis"] == "vs single" and abs(r["ratio"] - 1) < 0.05, r
            assert abs(r["raw_ratio"] - 1) > 0.4, r  # raw, the burst doubled it (or halved)


def test_a_replay_without_multiprocess_names_the_replay_option(local_run_df, local_run):
    """A replay run leaves kinds out with --replay-kinds, not --kinds: the verdict names the
    option the user can change."""
    meta = analysis.load_meta(local_run)
    df = local_run_df[local_run_df["kind"] != "multiprocess"]
    (plain,) = analysis.verdict(df, meta)
    assert "left out of --kinds" in plain.sentence, plain.sentence
    replay = {**meta, "spec": {**meta["spec"], "scenario": "replay:trace.pftrace"}}
    (v,) = analysis.verdict(df, replay)
    assert "left out of --replay-kinds" in v.sentence, v.sentence
