"""capture.trace_match on synthetic write/event sequences: the clock offset found from the
writes themselves when the trace's clock snapshot is off (no device needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from droidoom.capture.trace_match import match_events, wide_offset

OFF = 7_000_000_123  # the true boot - monotonic offset


def _writes(n: int, pids: list[int], adjs: list[int], seed: int = 1, lost: float = 0.0):
    """Back-to-back writes like the helper's (0.8-3 us each, 50-500 ns apart), cycling
    through `pids` and `adjs`; each write's event inside it, in the trace clock (OFF
    later); a fraction `lost` of events missing."""
    rng = np.random.default_rng(seed)
    lat = rng.integers(800, 3000, n)
    gap = rng.integers(50, 500, n)
    t = 1_000_000_000 + np.cumsum(lat + gap) - lat - gap
    pid = np.array([pids[i % len(pids)] for i in range(n)], np.int64)
    adj = np.array([adjs[(i // len(pids)) % len(adjs)] for i in range(n)], np.int64)
    e_ts = t + (lat * rng.uniform(0.2, 0.9, n)).astype(np.int64) + OFF
    keep = rng.uniform(size=n) >= lost
    return t, lat, pid, adj, e_ts[keep], pid[keep], adj[keep]


def _own(t, lat, pid, adj, e_ts, e_pid, e_adj, off):
    """The fraction of writes that get their own event (events are in write order; a
    lost one shifts nothing: its write gets none) at offset `off`."""
    idx, _ = match_events(e_ts - off, e_pid, e_adj, t, lat, pid, adj, np.ones(len(t), bool), 0)
    own = np.searchsorted(t, e_ts - OFF, "right") - 1  # the write each event came from
    got = idx >= 0
    return float((own[idx[got]] == np.flatnonzero(got)).sum() / len(t))


@pytest.mark.parametrize("skew", [20_000, -20_000, 2_000_000, -9_000_000])
@pytest.mark.parametrize("shape", ["400 targets", "one target toggling", "3 targets"])
def test_the_writes_pin_the_offset_when_the_snapshot_is_off(skew, shape):
    """A snapshot off by 20 us or ms: the offset found from the (pid, adj) sequence puts
    every event inside its own write, also when one target's adj toggles (every shift by
    two writes names the same pid and adj: only the timing tells them apart)."""
    pids, adjs = {"400 targets": (list(range(1000, 1400)), [0, 100, 200]),
                  "one target toggling": ([4242], [0, 100]),
                  "3 targets": ([700, 701, 702], [900, 0])}[shape]  # fmt: skip
    t, lat, pid, adj, e_ts, e_pid, e_adj = _writes(5000, pids, adjs)
    found = wide_offset(e_ts, e_pid, e_adj, t, lat, pid, adj, ref=OFF + skew)
    assert found is not None
    n, off = found
    assert n == len(t)
    assert _own(t, lat, pid, adj, e_ts, e_pid, e_adj, off) == 1.0
    # the snapshot's own offset pairs a few writes with their own event at best
    assert _own(t, lat, pid, adj, e_ts, e_pid, e_adj, OFF + skew) < 0.1


def test_lost_events_and_unknown_pids():
    """Events lost by the trace and writes of an unknown target pid still leave the
    offset pinned by the rest."""
    t, lat, pid, adj, e_ts, e_pid, e_adj = _writes(3000, [10, 11, 12, 13], [0, 1], lost=0.2)
    want = pid.copy()
    want[::7] = 0  # the target's pid unknown: takes no part
    n, off = wide_offset(e_ts, e_pid, e_adj, t, lat, want, adj, ref=OFF - 2_000_000)
    assert n >= 0.75 * np.count_nonzero(want)
    assert _own(t, lat, pid, adj, e_ts, e_pid, e_adj, off) == pytest.approx(0.8, abs=0.03)


def test_nothing_to_pin():
    """No event of any write's (pid, adj), none in the window, or no known pid: None."""
    t, lat, pid, adj, e_ts, e_pid, e_adj = _writes(100, [10], [0, 1])
    assert wide_offset(e_ts, e_pid + 1, e_adj, t, lat, pid, adj, ref=OFF) is None
    assert wide_offset(e_ts, e_pid, e_adj, t, lat, pid, adj, ref=OFF + 50_000_000) is None
    assert wide_offset(e_ts, e_pid, e_adj, t, lat, pid * 0, adj, ref=OFF) is None
    empty = np.array([], np.int64)
    assert wide_offset(empty, empty, empty, t, lat, pid, adj, ref=OFF) is None


@pytest.mark.parametrize("skew", [20_000, 2_000_000])
def test_join_says_the_offset_came_from_the_writes(skew):
    """join_trace with a trace whose only clock snapshot is off: >= 99% matched, run.json
    says the offset came from the matched writes and by how much the snapshot was off."""
    from perfetto.protos.perfetto.trace import perfetto_trace_pb2 as pb

    from droidoom.capture.base import CaptureRunInfo
    from droidoom.capture.perfetto import join_trace
    from droidoom.traces.perfetto import parse_trace

    pids = list(range(2000, 2400))
    t, lat, pid, adj, e_ts, e_pid, e_adj = _writes(4000, pids, [0, 900])
    tr = pb.Trace()
    snap = tr.packet.add().clock_snapshot
    snap.clocks.add(clock_id=6, timestamp=int(t[0]) + OFF + skew)
    snap.clocks.add(clock_id=3, timestamp=int(t[0]))
    b = tr.packet.add().ftrace_events
    for ts, p, a in zip(e_ts.tolist(), e_pid.tolist(), e_adj.tolist(), strict=True):
        ev = b.event.add(timestamp=ts, pid=50)
        ev.oom_score_adj_update.pid, ev.oom_score_adj_update.oom_score_adj = p, a
        ev.oom_score_adj_update.comm = "t"
    n = len(t)
    samples = pd.DataFrame({
        "t_ns": t, "latency_ns": lat, "adj_to": adj, "err": [0] * n,
        "target": [i % len(pids) for i in range(n)], "kind": ["single"] * n,
        "point": [0] * n, "population": [400] * n, "mode": ["reopen"] * n,
    })  # fmt: skip
    info = CaptureRunInfo(helper_pid=50, targets={i: {"pid": p} for i, p in enumerate(pids)})
    _, stats, _ = join_trace(samples, parse_trace(tr.SerializeToString()), info)
    assert stats["matched_fraction"] >= 0.99 and stats["adj_mismatch"] == 0, stats
    assert stats["clock_source"] == "matched writes", stats
    assert abs(stats["snapshot_error_ns"] - skew) < 1000, stats
    assert "snapshot was off by" in stats["clock"], stats
