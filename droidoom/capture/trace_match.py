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
from typing import Any

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
    cov = _coverage(starts, ends, w)
    if cov is None:
        return None
    starts, ends, cover = cov
    best = int(cover.max())
    # Coverage peaks at a start s and holds until the first end at or after it.
    s = starts[cover == best]
    near = np.clip(ref, s, ends[np.searchsorted(ends, s, "left")])
    return best, int(near[np.argmin(np.abs(near - ref))])


def _coverage(starts: I64, ends: I64, w: I64) -> tuple[I64, I64, I64] | None:
    """Offsets where writes' intervals [starts, ends] begin (sorted), the ends (sorted),
    and how many writes cover each of those starts; None when no interval is left.
    Pairs come grouped by write `w`, each write's intervals rising: each is trimmed to
    after its predecessor's end, so that a write counts once where two overlap."""
    same = np.r_[False, w[1:] == w[:-1]]
    starts[same] = np.maximum(starts[same], ends[np.flatnonzero(same) - 1] + 1)
    starts, ends = np.sort(starts[starts <= ends]), np.sort(ends[starts <= ends])
    if not len(starts):
        return None
    cover = np.searchsorted(starts, starts, "right") - np.searchsorted(ends, starts, "left")
    return starts, ends, cover


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


WIDE_HALF_NS = 10_000_000  # how far off a snapshot may be: a reader preempted for ms
WIDE_SAMPLE = 256  # writes whose (pid, adj) propose offsets
WIDE_CANDIDATES = 32  # proposed offsets scored over every write
PEAK_APART_NS = 50  # proposals closer than this are one (writes are >= ~1 us apart)
REFINE_HALF_NS = 2000  # the chosen proposal is re-centred within this on every write
_ADJ_SPAN = 4096  # (pid, adj) -> one key; adj beyond +-2048 cannot be real and is clipped


def wide_offset(
    e_ts: I64, e_pid: I64, e_adj: I64, t: I64, lat: I64, want_pid: I64, adj: I64, ref: int,
    half: int = WIDE_HALF_NS,
) -> tuple[int, int] | None:  # fmt: skip
    """(writes holding an event of their pid and adj, offset) for the trace-minus-helper
    offset within ref +- half that puts the most events inside the write that wrote them;
    None when no offset puts any there.

    For a clock snapshot that is off by more than the writes' spacing (microseconds to
    milliseconds): the writes themselves pin the offset, each naming its target's pid and
    the adj it wrote, in order. A sample of writes proposes offsets (where most of them
    hold an event of their pid and adj); each proposal is then scored over every write
    (writes of an unknown pid, `want_pid` <= 0, take no part). `e_ts` in the trace clock."""
    known = want_pid > 0
    if not len(e_ts) or not known.any():
        return None
    t, lat = t[known], lat[known]
    keys, erank = np.unique(_key(e_pid, e_adj), return_inverse=True)
    wkey = _key(want_pid[known], adj[known])
    wr = np.minimum(np.searchsorted(keys, wkey), len(keys) - 1)
    has = keys[wr] == wkey
    t, lat, wr = t[has], lat[has], wr[has]
    if not len(t):
        return None
    # Events sorted by (key, time) as one int64 line, key after key: a write's events of
    # its key inside a time window are one searchsorted range.
    base = min(int(e_ts.min()), int(t.min()) + ref - half)
    span = max(int(e_ts.max()), int((t + lat).max()) + ref + half) - base + 1
    if len(keys) * span >= 2**62:  # a trace of months: no room for the keys
        return None
    line = np.sort(erank.astype(np.int64) * span + (e_ts - base))
    at = wr.astype(np.int64) * span - base

    def window(sel: I64, c_lo: int, c_hi: int) -> tuple[I64, I64]:
        a = np.searchsorted(line, at[sel] + t[sel] + c_lo, "left")
        return a, np.searchsorted(line, at[sel] + t[sel] + lat[sel] + c_hi, "right")

    every = np.arange(len(t))

    def score(c: int) -> int:
        a, b = window(every, c, c)
        return int(np.count_nonzero(b > a))

    cands = _peaks(line, at, t, lat, window, _sample(len(t), window, ref, half), ref, half)
    if not cands:
        return None
    best = max(cands, key=lambda c: (score(c), -abs(c - ref)))
    # The sample's peak is wider than every write's: centre it on all of them.
    fine = _peaks(line, at, t, lat, window, every, best, REFINE_HALF_NS)[:1] or [best]
    c = max((best, fine[0]), key=lambda c: (score(c), c == fine[0]))
    n = score(c)
    return (n, c) if n else None


def _key(pid: I64, adj: I64) -> I64:
    return pid.astype(np.int64) * _ADJ_SPAN + np.clip(adj, -2048, 2047) + 2048


def _sample(n: int, window: Any, ref: int, half: int) -> I64:
    """Evenly spread writes, thinned until their candidate pairs fit FIT_MAX_PAIRS (a key
    written thousands of times per ms)."""
    n_s = min(n, WIDE_SAMPLE)
    while True:
        sample = np.unique(np.linspace(0, n - 1, n_s).astype(np.int64))
        a, b = window(sample, ref - half, ref + half)
        if int((b - a).sum()) <= FIT_MAX_PAIRS or n_s <= 8:
            return sample
        n_s //= 2


def _peaks(
    line: I64, at: I64, t: I64, lat: I64, window: Any, sel: I64, ref: int, half: int
) -> list[int]:
    """Up to WIDE_CANDIDATES offsets in ref +- half, best first: the middles of the
    coverage peaks where the most writes `sel` hold an event of their (pid, adj)."""
    lo, hi = ref - half, ref + half
    a, b = window(sel, lo, hi)
    n = b - a
    total = int(n.sum())
    if not total or total > FIT_MAX_PAIRS:
        return []
    w = np.repeat(sel, n)
    k = np.repeat(a, n) + np.arange(total) - np.repeat(np.cumsum(n) - n, n)
    e = line[k] - at[w]  # the event's time, back from the line
    cov = _coverage(np.maximum(e - t[w] - lat[w], lo), np.minimum(e - t[w], hi), w)
    if cov is None:
        return []
    starts, ends, cover = cov
    out: list[int] = []
    for i in np.argsort(-cover, kind="stable")[: 20 * WIDE_CANDIDATES]:
        end = ends[min(np.searchsorted(ends, starts[i], "left"), len(ends) - 1)]
        c = int(starts[i] + (end - starts[i]) // 2)  # coverage holds from a start to an end
        if all(abs(c - x) > PEAK_APART_NS for x in out):
            out.append(c)
            if len(out) == WIDE_CANDIDATES:
                break
    return out
