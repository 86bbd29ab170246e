"""The helper's trace-replay additions (PROTOCOL.md): per-write `gap_us` on `w` lines and
up to 256 targets (a phone trace has dozens of app processes)."""

from __future__ import annotations

import numpy as np
import pytest
import test_helper_native as native
from test_helper_native import EXIT_OK, EXIT_USAGE, check_records, expected_records, run_helper

from droidoom.protocol import PlanPoint, PlanTarget, render_plan


@pytest.fixture(scope="module")
def facts() -> dict[str, int]:
    return native.facts.__wrapped__()


@pytest.fixture(scope="module")
def adj_lo(facts) -> int:
    return native.adj_lo.__wrapped__(facts)


def test_gap_us_delays_each_write_and_keeps_order(tmp_path, facts, adj_lo):
    targets = [PlanTarget(0, "single", 1), PlanTarget(1, "threaded", 2)]
    writes = ((0, 900, 1), (1, 700, 2), (0, adj_lo, 3), (1, 950, 4), (0, 999, 5))
    gaps = (0, 30_000, 0, 60_000, 20_000)  # us: 30 ms, back to back, 60 ms, 20 ms
    point = PlanPoint(0, 0, 1, "reopen", 0, 0, writes, gaps)
    text = render_plan(targets, [point])
    assert "w 1 700 2 30000\n" in text
    with run_helper(text, tmp_path) as h:
        assert h.wait(60) == EXIT_OK, h.output()
        recs = h.record_array()
    check_records(recs, expected_records(targets, [point], facts["adj"]))
    # write i waits until the point's start + the gaps so far (an absolute schedule:
    # sleeps overshoot, but lateness does not accumulate); the first write is at ~start
    since_first = recs["t_ns"].astype(np.int64) - recs["t_ns"][0]
    assert (since_first >= np.cumsum(gaps) * 1000 - 1_000_000).all(), since_first


def test_256_targets_are_accepted(tmp_path, adj_lo):
    targets = [PlanTarget(i, "single", 1) for i in range(256)]
    writes = tuple((i, 900 + i % 50, 0) for i in range(256))
    point = PlanPoint(0, 0, 1, "reopen", 0, 0, writes)
    with run_helper(render_plan(targets, [point]), tmp_path) as h:
        assert h.wait(120) == EXIT_OK, h.output()
        recs = h.record_array()
    assert recs["target"].tolist() == list(range(256))


BAD = {
    "negative gap": "droidoom-plan 1\ntarget 0 single 1\npoint 0 0 1 reopen 0 0\nw 0 5 0 -1\n",
    "gap too big": "droidoom-plan 1\ntarget 0 single 1\npoint 0 0 1 reopen 0 0\n"
    "w 0 5 0 2147483648\n",
    "w extra field": "droidoom-plan 1\ntarget 0 single 1\npoint 0 0 1 reopen 0 0\nw 0 5 0 1 2\n",
    "257 targets": "droidoom-plan 1\n" + "".join(f"target {i} single 1\n" for i in range(257)),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_replay_plans_exit_2(tmp_path, name):
    with run_helper(BAD[name], tmp_path) as h:
        assert h.wait(30) == EXIT_USAGE, h.output()
        assert h.last().kind == "error" and "line" in h.last().fields["msg"]
