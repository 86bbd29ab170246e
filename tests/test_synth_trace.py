"""Synthetic phone traces (issue 12's test input): real Perfetto protobuf, read back by
droidoom.traces.perfetto exactly, with ActivityManager's adj levels and launch storms."""

from __future__ import annotations

import pandas as pd

from droidoom.traces.perfetto import CLOCK_BOOTTIME, CLOCK_MONOTONIC, parse_trace
from droidoom.traces.synth import LMKD_PID, NUM_SLOTS, SynthSpec, generate

SPEC = SynthSpec(seed=7, duration_s=1800)


def test_reader_reproduces_every_event_in_order():
    data, truth = generate(SPEC)
    tr = parse_trace(data)
    ev = tr.oom_events
    assert len(ev) == len(truth) > 500
    pd.testing.assert_frame_equal(
        ev[["ts_ns", "pid", "adj"]].astype("int64").reset_index(drop=True),
        truth[["ts_ns", "pid", "adj"]].astype("int64").reset_index(drop=True),
    )
    assert (ev["comm"].astype(str).to_numpy() == truth["comm"].to_numpy()).all()
    assert (ev["writer_tid"] == LMKD_PID).all() and (ev["writer_tgid"] == LMKD_PID).all()
    # per process: the adj sequence is the generator's, one write per change
    for pid, g in ev.groupby("pid"):
        want = truth.loc[truth["pid"] == pid, "adj"].tolist()
        assert g["adj"].tolist() == want
        assert all(a != b for a, b in zip(want, want[1:], strict=False))
    assert tr.clock_offset_ns(CLOCK_BOOTTIME, CLOCK_MONOTONIC) == 7_000_000_000
    # every process that ever had an update is in the process list
    assert set(ev["pid"]) <= set(tr.processes["pid"])
    assert LMKD_PID in set(tr.processes["pid"])
    assert tr.writer_pids("lmkd") == {LMKD_PID} and len(tr.updates_by("lmkd")) == len(ev)


def test_activity_manager_levels_and_cached_slots():
    _, truth = generate(SPEC)
    adj = set(truth["adj"])
    cached_act = {900 + 10 * k for k in range(NUM_SLOTS)}
    cached_empty = {905 + 10 * k for k in range(NUM_SLOTS)}
    assert NUM_SLOTS == 10
    assert adj <= {0, 100, 200, 500, 700, 800} | cached_act | cached_empty
    assert {0, 700, 500} <= adj and len(adj & cached_act) >= 5  # launches, aging, services


def test_launch_storms_and_determinism():
    data, truth = generate(SPEC)
    ts = truth["ts_ns"].to_numpy()
    gaps = ts[1:] - ts[:-1]
    bursts = (gaps > 50_000_000).sum() + 1  # quiet gaps split the trace into storms
    assert bursts < len(truth) / 2  # updates come in batches, not one by one
    storm_sizes = pd.Series((gaps > 50_000_000).cumsum()).value_counts()
    assert storm_sizes.max() >= 8  # a launch moves many processes at once
    foregrounds = (truth["adj"] == 0).sum()
    expected = SPEC.duration_s / SPEC.launch_every_s
    assert 0.5 * expected < foregrounds < 1.5 * expected
    again, truth2 = generate(SPEC)
    assert again == data and truth2.equals(truth)
    other, _ = generate(SynthSpec(seed=8, duration_s=1800))
    assert other != data
