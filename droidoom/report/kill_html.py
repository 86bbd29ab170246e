"""The HTML report's view of a kill run (`--measure kill`): the kill verdict, the median of
each step of lmkd's kill (pidfd_open, pidfd_send_signal, process_mrelease, the wait) per
victim kind x population, the share of kills whose mm was still shared at
process_mrelease, errno counts, and the process_mrelease fits."""

from __future__ import annotations

import errno
import html
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from .. import units
from ..analysis import kill
from ..vocab import Complexity
from .rows import scaling_rows

#: Kill verdict -> badge colour class of the report's CSS.
_BADGE = {kill.WALKS: "regressed", kill.NO_WALK: "fixed"}
_STEPS = [("open_ns", "pidfd_open"), ("kill_ns", "pidfd_send_signal"),
          ("mrelease_ns", "process_mrelease"), ("mrelease_p90_ns", "process_mrelease p90"),
          ("reap_ns", "wait (reap)"), ("spawn_ns", "victim spawn")]  # fmt: skip


def _e(x: object) -> str:
    return html.escape(str(x))


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], left: int) -> str:
    def cell(i: int, v: str, tag: str) -> str:
        cls = ' class="l"' if i < left else ""
        return f"<{tag}{cls}>{v}</{tag}>"

    out = ["<table><tr>", *(cell(i, _e(h), "th") for i, h in enumerate(head)), "</tr>"]
    for row in rows:
        out += ["<tr>", *(cell(i, v, "td") for i, v in enumerate(row)), "</tr>"]
    return "".join(out + ["</table>"])


def kill_html(df: pd.DataFrame, metas: Sequence[Mapping[str, Any]], h: str) -> list[str]:
    """The kill run's sections (`h`: the heading tag of its level)."""
    parts = [f"<{h}>Kill verdict</{h}>"]
    for v in kill.verdicts(df, metas):
        badge = _BADGE.get(v.status, "inconclusive")
        shared = "-" if pd.isna(v.shared_share) else f"{v.shared_share:.0%}"
        parts.append(
            f'<div class="verdict"><span class="badge {badge}">{_e(v.status)}</span> '
            f"<b>{_e(v.device)}</b> (threaded kills with the mm still shared at "
            f"process_mrelease: {shared})<br>{_e(v.sentence)}</div>"
        )
    parts += [f"<{h}>Kill path: median of each step (µs)</{h}>",
              "<p>Per kill a fresh victim is spawned before the clock starts (its spawn is "
              "shown apart); then pidfd_open, pidfd_send_signal(SIGKILL) and "
              "process_mrelease(pidfd, 0) are timed, and the wait (reap) after. shared: "
              "mm_users &gt; 1 when process_mrelease ran.</p>"]  # fmt: skip
    head = ["device", "kind", "population", "kills", *(s for _, s in _STEPS), "mm shared",
            "errors"]  # fmt: skip
    rows = [[_e(r.device), _e(r.kind), str(r.population), str(r.n),
             *(units.us(float(getattr(r, c))) for c, _ in _STEPS),
             _share(r.shared), str(r.errors) if r.errors else ""]
            for r in kill.summary(df).itertuples(index=False)]  # fmt: skip
    parts.append(_table(head, rows, left=2))
    parts += _errno_html(df, h)
    parts += _fits_html(kill.kill_fits(df), h)
    return parts


def _share(x: object) -> str:
    f = float(x) if isinstance(x, int | float) else float("nan")
    return "-" if f != f else f"{f:.0%}"


def _errno_html(df: pd.DataFrame, h: str) -> list[str]:
    """Failed calls per device x kind x stage x errno (EINVAL: nothing left to reap, or a
    multiprocess victim's CLONE_VM child still holds the mm; ENOSYS: before 5.15)."""
    bad = df[df["stage"].astype(str) != "ok"]
    if bad.empty:
        return [f"<{h}>Errors</{h}>", "<p>Every call succeeded.</p>"]
    counts = bad.groupby(["device", "kind", "stage", "err"], observed=True).size()
    keys, ns = counts.index.tolist(), counts.tolist()
    rows = [[_e(d), _e(k), _e(s), _e(errno.errorcode.get(int(e), str(e))), str(n)]
            for (d, k, s, e), n in zip(keys, ns, strict=True)]  # fmt: skip
    return [f"<{h}>Errors</{h}>",
            "<p>A multiprocess victim's process_mrelease returns EINVAL after walking (its "
            "CLONE_VM child outlives the kill): those calls time the walk and are fitted as "
            "the positive control.</p>",
            _table(["device", "kind", "failed call", "errno", "kills"], rows, left=4)]  # fmt: skip


def _fits_html(fits: Sequence[Any], h: str) -> list[str]:
    cls: dict[str, str] = {Complexity.ON: "on", Complexity.O1: "o1"}
    rows = [[*map(_e, r[:-1]), f"<span class='{cls.get(r[-1], 'inc')}'>{_e(r[-1])}</span>"]
            for r in scaling_rows(fits)]  # fmt: skip
    head = ["device", "call", "kind", "ns/process", "95% CI", "base µs", "over sweep",
            "populations", "scaling"]  # fmt: skip
    return [f"<{h}>Scaling of process_mrelease</{h}>",
            "<p>Theil-Sen slope of per-point medians against extra processes. A kind the "
            "write rules leave open is O(1) when flat next to the walk measured in the same "
            "run (its CI holds zero or stays below half the walk's slope).</p>",
            _table(head, rows, left=3)]  # fmt: skip
