"""Pair a trace's oom_score_adj_update events with the helper's timed writes.

The events carry the trace clock (BOOTTIME on Android), the writes the helper's
CLOCK_MONOTONIC. The trace's clock snapshots give the offset between the two, but each
snapshot is a few clock reads in a row: a reader preempted between them (a busy phone,
traced_probes at low priority) skews it by microseconds, while the helper's writes are
only tens of nanoseconds apart. An offset off by more than that gap shifts every event
into its neighbour's window. So the offset is fitted, near the snapshots, to where the
most events fall inside their write (`fit_offset`), and events are paired first by that
containment, then within a small tolerance (`match_events`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

I64 = npt.NDArray[np.int64]
B = npt.NDArray[np.bool_]

SNAPSHOT_JITTER_NS = 1000  # how far outside its snapshots' range the offset may lie
FIT_MAX_SPREAD_NS = 100_000  # snapshots further apart (preempted reader, suspend): each alone
FIT_MAX_PAIRS = 4_000_000  # candidate (write, event) pairs the fit may weigh
MATCH_TOL_NS = 1000  # after a fit: the trace clock's and the helper clock's disagreement


def fit_offset(
    e_ts: I64, e_pid: I64, t: I64, lat: I64, want_pid: I64, snapshots: Sequence[int]
) -> int | None:
    """The trace-minus-helper clock offset that puts the most events of the right pid
    inside their write's [t, t + latency], searched near the clock snapshots' offsets
    (`snapshots`: boot - monotonic of each): within their bracket when they agree to
    FIT_MAX_SPREAD_NS, else near each one on its own (a snapshot whose reader was
    preempted for milliseconds, or clocks that moved). None when no offset puts any event
    inside a write. `e_ts` sorted, in the trace clock."""
    snaps = np.unique(np.asarray(snapshots, dtype=np.int64))
    if not len(snaps) or not len(e_ts) or not len(t):
        return None
    spread = int(snaps[-1] - snaps[0])
    if spread <= FIT_MAX_SPREAD_NS:
        brackets = [(int(np.median(np.asarray(snapshots))), spread + SNAPSHOT_JITTER_NS)]
    else:
        brackets = [(int(c), SNAPSHOT_JITTER_NS) for c in snaps]
    fits = [f for c, half in brackets if (f := _fit(e_ts, e_pid, t, lat, want_pid, c, half))]
    return max(fits)[1] if fits else None


def _fit(
    e_ts: I64, e_pid: I64, t: I64, lat: I64, want_pid: I64, ref: int, half: int
) -> tuple[int, int] | None:
    """(events inside their write, offset) for the offset in ref +- half that puts the
    most inside, nearest `ref`; None when none does or there are too many pairs to weigh."""
    lo, hi = ref - half, ref + half
    a = np.searchsorted(e_ts, t + lo, "left")
    b = np.searchsorted(e_ts, t + lat + hi, "right")
    n = b - a
    total = int(n.sum())
    if not total or total > FIT_MAX_PAIRS:
        return None
    w = np.repeat(np.arange(len(t)), n)
    k = np.repeat(a, n) + np.arange(total) - np.repeat(np.cumsum(n) - n, n)
    keep = (want_pid[w] <= 0) | (e_pid[k] == want_pid[w])
    w, k = w[keep], k[keep]
    if not len(w):
        return None
    # Event k lies inside write w for every offset in [e - t - lat, e - t]. A write's
    # intervals rise with k: trim each to after its predecessor's end, so that a write
    # counts once wherever two of its candidate events overlap.
    starts = np.maximum(e_ts[k] - t[w] - lat[w], lo)
    ends = np.minimum(e_ts[k] - t[w], hi)
    same = np.r_[False, w[1:] == w[:-1]]
    starts[same] = np.maximum(starts[same], ends[np.flatnonzero(same) - 1] + 1)
    starts, ends = np.sort(starts[starts <= ends]), np.sort(ends[starts <= ends])
    if not len(starts):
        return None
    cover = np.searchsorted(starts, starts, "right") - np.searchsorted(ends, starts, "left")
    best = int(cover.max())
    # Coverage peaks at a start s and holds until the first end at or after it.
    s = starts[cover == best]
    near = np.clip(ref, s, ends[np.searchsorted(ends, s, "left")])
    return best, int(near[np.argmin(np.abs(near - ref))])


def match_events(
    e_ts: I64, e_pid: I64, e_adj: I64, t: I64, lat: I64, want_pid: I64, adj: I64, ok: B,
    tol: int,
) -> tuple[I64, int]:
    """Index of each write's event (-1: none) and the count of writes whose only
    candidate events named another pid. `e_ts` sorted and already in the helper's clock.

    A write first takes an event of its target's pid inside [t, t + latency] (the first
    one carrying the adj it wrote, else the first); a write left without one then takes a
    free event of that pid within `tol` of its window that lies inside no other write.
    Errored writes (`ok` false) change nothing in the kernel, so they take no event."""
    idx = np.full(len(t), -1, dtype=np.int64)
    if not len(e_ts) or not len(t):
        return idx, 0
    order = np.argsort(t, kind="stable")
    ts, te = t[order], t[order] + lat[order]
    # The write (in `order`) whose exact window holds each event, or -1.
    cand = np.searchsorted(ts, e_ts, "right") - 1
    inside = (cand >= 0) & (e_ts <= te[np.maximum(cand, 0)])
    owner = np.where(inside, order[np.maximum(cand, 0)], -1)
    used = np.zeros(len(e_ts), bool)
    pid_ok = (want_pid[np.maximum(owner, 0)] <= 0) | (e_pid == want_pid[np.maximum(owner, 0)])
    for k in np.flatnonzero(inside & pid_ok):
        w = owner[k]
        if not ok[w] or (idx[w] >= 0 and (e_adj[idx[w]] == adj[w] or e_adj[k] != adj[w])):
            continue
        if idx[w] >= 0:
            used[idx[w]] = False  # a later event carries the written adj: that one
        idx[w], used[k] = k, True
    mismatch = 0
    for w in order[(idx[order] < 0) & ok[order]]:
        a = np.searchsorted(e_ts, t[w] - tol, "left")
        b = np.searchsorted(e_ts, t[w] + lat[w] + tol, "right")
        free = [k for k in range(a, b) if not used[k] and owner[k] in (-1, w)]
        mine = [k for k in free if want_pid[w] <= 0 or e_pid[k] == want_pid[w]]
        if mine:
            idx[w], used[mine[0]] = mine[0], True
        elif free:
            mismatch += 1
    return idx, mismatch
