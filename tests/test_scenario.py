"""Scenario and spec: pure Python, no target needed."""

from __future__ import annotations

from dataclasses import replace

import pytest

from droidoom import scenario as sc
from droidoom import spec as specs
from droidoom.errors import UsageError
from droidoom.protocol import decode_records, parse_line, render_plan


def test_plan_is_seeded_and_reproducible():
    a = sc.build_plan(specs.QUICK)
    b = sc.build_plan(specs.QUICK)
    c = sc.build_plan(replace(specs.QUICK, seed=2))
    assert a == b
    assert a.points[0].writes != c.points[0].writes


def test_lmkd_moves_are_realistic():
    plan = sc.build_plan(replace(specs.DEFAULT, populations=(0,), writes=5000))
    writes = plan.points[0].writes
    roles = {sc.ROLES[r] for _, _, r in writes}
    assert roles == {"foreground", "visible", "perceptible", "service", "previous", "cached"}
    for _, adj, r in writes:
        if sc.ROLES[r] == "cached":
            assert sc.CACHED_APP_MIN <= adj <= sc.CACHED_APP_MAX
        else:
            assert adj == sc._ROLE_ADJ[sc.ROLES[r]]
    # a launch always lands on foreground: cached apps never jump straight to visible
    prev = {}
    for t, _adj, r in writes:
        if prev.get(t) == "cached":
            assert sc.ROLES[r] in ("cached", "foreground")
        prev[t] = sc.ROLES[r]


def test_sweep_goes_up_and_back_down_with_kinds_interleaved():
    """Drift in time (DVFS, thermal) must not line up with population size: the sweep
    comes back down, and within a point the kinds take turns (issue 9 item 7)."""
    plan = sc.build_plan(replace(specs.QUICK, populations=(800, 0, 400), writes=10))
    assert [p.population for p in plan.points] == [0, 400, 800, 400, 0]
    assert [len(p.writes) for p in plan.points] == [15, 15, 30, 15, 15]  # 10 per kind per pop
    targets = [t for t, _, _ in plan.points[0].writes]
    assert targets == [0] * 5 + [1] * 5 + [2] * 5  # 5 writes per kind fit one block
    assert plan.writer == (-2, True)  # same core for every write, SCHED_FIFO when allowed
    old = sc.build_plan(replace(specs.QUICK, populations=(800, 0, 400), order="ascending"))
    assert [p.population for p in old.points] == [0, 400, 800]
    # a run recorded before `order` existed is rebuilt (recover) the way it ran
    legacy = specs.ProfileSpec.from_dict({"populations": [0, 400], "writes": 4})
    assert (legacy.order, legacy.cpu, legacy.fifo) == ("ascending", -1, False)


def test_kinds_take_turns_in_blocks_in_abba_order_with_warmups_flagged():
    """Write by write, each control write followed a multiprocess write that had just walked
    every process (single +70% at population 800 on this host): kinds now take turns in
    blocks, the turn order rotating ABBA-style so drift still touches every kind alike, and
    the first writes after a switch are flagged as warm-up."""
    spec = replace(specs.QUICK, populations=(0,), writes=12, block=4, settle=2)
    plan = sc.build_plan(spec)
    (point,) = plan.points
    blocks = [t for i, (t, _, _) in enumerate(point.writes) if i % 4 == 0]
    assert blocks == [0, 1, 2, 2, 1, 0, 1, 2, 0]  # ABC CBA BCA
    assert [len(point.writes)] == [3 * 12]
    assert sorted(t for t, _, _ in point.writes) == [0] * 12 + [1] * 12 + [2] * 12
    flags = sc.warmup_flags(plan)
    # a switch starts a run of 2 warm-ups; C then C (a round's end and the next's start)
    # is no switch, so the second C block is all timed
    runs = [flags[i : i + 4] for i in range(0, 36, 4)]
    assert runs[:4] == [[True, True, False, False]] * 3 + [[False] * 4]
    assert plan.info["blocks"] == {"block": 4, "settle": 2, "order": sc.block_layout(spec)["order"]}
    # --block 1 is the old round robin, nothing flagged; a run recorded before blocks is
    # rebuilt (recover) that way
    rr = sc.build_plan(replace(spec, block=1, settle=0))
    assert [t for t, _, _ in rr.points[0].writes][:6] == [0, 1, 2, 0, 1, 2]
    assert not any(sc.warmup_flags(rr))
    legacy = specs.ProfileSpec.from_dict({"populations": [0, 400], "writes": 4, "order": "updown"})
    assert (legacy.block, legacy.settle) == (1, 0)


def test_alternate_and_adj_min_clamp():
    spec = replace(specs.QUICK, scenario="alternate", levels=(-500, 900), writes=10)
    plan = sc.build_plan(spec, adj_min=0)
    values = {adj for _, adj, _ in plan.points[0].writes}
    assert values == {0, 900}
    assert plan.clamped == 5 * 3 * 3  # half the writes, every kind and point


@pytest.mark.parametrize(
    "change",
    [
        {"populations": (-1,)},
        {"populations": ()},
        {"kinds": ("bogus",)},
        {"writes": 0},
        {"threads": 65},
        {"levels": (0, 2000)},
        {"rate": -1.0},
        {"scenario": "chaos"},
        {"order": "sideways"},
        {"cpu": -3},
        {"block": 0},
        {"block": 4, "settle": 4},
        {"settle": -1},
    ],
)
def test_spec_rejects_bad_values(change):
    with pytest.raises(UsageError):
        replace(specs.DEFAULT, **change).validate()


def test_plan_text_and_protocol_round_trip():
    plan = sc.build_plan(replace(specs.QUICK, writes=3, populations=(0,)))
    text = render_plan(plan.targets, plan.points)
    lines = text.splitlines()
    assert lines[0] == "droidoom-plan 1"
    assert lines[1:4] == ["target 0 single 1", "target 1 threaded 8", "target 2 multiprocess 1"]
    assert lines[4].startswith("point 0 0 8 reopen 0 ")
    assert sum(line.startswith("w ") for line in lines) == 9
    ev = parse_line('target idx=2 kind=multiprocess pid=0 status=error errno=22 msg="no clone"')
    assert ev.kind == "target" and ev.int("errno") == 22 and ev.fields["msg"] == "no clone"
    assert len(decode_records(b"")) == 0
    header = b"DDOOMREC" + (1).to_bytes(4, "little") + (32).to_bytes(4, "little")
    assert len(decode_records(header + bytes(32 * 2 + 7))) == 2  # partial tail dropped
