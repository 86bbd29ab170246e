"""The kill path (`droidoom profile --measure kill`): does process_mrelease walk every process?

lmkd (Android 12+) kills with pidfd_send_signal(SIGKILL) and at once calls
process_mrelease(pidfd, 0) (5.15+) to reap the victim's memory. process_mrelease calls
task_will_free_mem(), which returns early only when mm_users <= 1 - the test that made
__set_oom_adj walk every process before 67197a4f28d2. A multi-threaded victim (every app)
still holds its mm in its other threads when lmkd makes the call, so the call runs
for_each_process over the whole system.

Here single-threaded victims are the control (mm_users is 1: no walk), threaded victims
the subject; both are fitted like writes (Theil-Sen of per-point medians of the
process_mrelease time against population, `droidoom.analysis.verdicts.fits`).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from ..vocab import Complexity
from .kernels import parse_release
from .verdicts import Fit, fits

#: process_mrelease appeared in 5.15; every kernel since walks unless it carries a fix.
MRELEASE_SINCE = (5, 15)
#: Below this share of threaded kills with the mm still shared at the call, the race (the
#: victim's threads exiting first) may have hidden the walk: the verdict says so.
MIN_SHARED_SHARE = 0.9

WALKS, NO_WALK, INCONCLUSIVE, UNSUPPORTED = "walks", "no-walk", "inconclusive", "unsupported"
#: A kind is flat next to the walk of the same run when its CI's high slope stays below
#: this share of the walk's: a kind that walks visits the same processes and costs what the
#: walk costs (threaded and multiprocess victims agree within ~15% on every kernel
#: measured), so even its CI's high end cannot sit at half of it.
FLAT_MAX_SHARE = 0.5


@dataclass(frozen=True)
class KillVerdict:
    """One device's kill-path verdict. `status`: walks | no-walk | inconclusive | unsupported."""

    device: str
    status: str
    sentence: str
    threaded: Fit | None
    control: Fit | None  # single-threaded victims
    shared_share: float  # threaded kills whose mm was still shared at process_mrelease
    mrelease_errors: int  # process_mrelease calls that failed (single + threaded victims)


def timed_kills(df: pd.DataFrame) -> pd.DataFrame:
    """Kills whose every call succeeded, without the warm-up after a switch of kind."""
    keep = df["stage"].astype(str) == "ok"
    if "warmup" in df.columns:
        keep &= ~df["warmup"].astype(bool)
    return df[keep]


def walked_kills(df: pd.DataFrame) -> pd.DataFrame:
    """`timed_kills` plus the multiprocess victims' calls that failed with EINVAL while the
    CLONE_VM child still shared the mm: task_will_free_mem walked every process (the child,
    made after the population, is the last one it meets) before refusing. Those calls time
    the walk on every kernel, gated or not: the in-run positive control, as for writes."""
    walked = (
        (df["kind"].astype(str) == "multiprocess")
        & (df["stage"].astype(str) == "process_mrelease")
        & (df["err"] == errno.EINVAL)
        & df["shared"].astype(bool)
    )
    keep = walked | (df["stage"].astype(str) == "ok")
    if "warmup" in df.columns:
        keep &= ~df["warmup"].astype(bool)
    out = df[keep].copy()
    out.loc[walked[keep], "err"] = 0  # a timed walk, not a failed sample, for the fits
    return out


def kill_fits(df: pd.DataFrame) -> list[Fit]:
    """Fits of process_mrelease time against population per device x kind (mode
    "process_mrelease"), on `walked_kills`.

    A fit is O(1) when it is flat next to the walk measured in the same run (another kind's
    O(N) slope): its CI holds zero, or its high end stays below `FLAT_MAX_SHARE` of the
    walk's ns/process. Under TCG one call that does not walk takes ~150 us and host load
    moves a point's median by 10-30%: the write rules (the CI's high slope below 5
    ns/process for O(1), its low slope above it for O(N)) call such noise inconclusive or
    even O(N); a walk there costs ~500-1000 ns/process, far above it."""
    out = [replace(f, mode="process_mrelease") for f in fits(walked_kills(df))]
    return [_relative_to_walk(f, out) for f in out]


def _relative_to_walk(f: Fit, all_fits: list[Fit]) -> Fit:
    if f.complexity == Complexity.O1 or not np.isfinite(f.slope_ns):
        return f
    walks = [w.slope_ns for w in all_fits if w.device == f.device
             and w.complexity == Complexity.ON and w.kind != f.kind]  # fmt: skip
    if not walks:
        return f
    walk = max(walks)
    holds_zero = f.ci_low <= 0 <= f.ci_high
    if not (holds_zero or f.ci_high < FLAT_MAX_SHARE * walk):
        return f
    why = "its CI holds zero" if holds_zero else (
        f"its CI's high slope is below {FLAT_MAX_SHARE:.0%} of it")
    return replace(f, complexity=Complexity.O1,
                   reason=f"flat next to the walk measured here ({walk:+.0f} ns/process): {why}")


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per device x kind x population: kills, medians (ns) of each call, the share with the
    mm still shared, and failures per stage."""
    rows = []
    for (device, kind, pop), g in df.groupby(["device", "kind", "population"], observed=True):
        ok = walked_kills(g)
        stage = g["stage"].astype(str)
        rows.append({
            "device": device, "kind": kind, "population": int(str(pop)), "n": len(ok),
            "open_ns": _med(ok["open_ns"]), "kill_ns": _med(ok["kill_ns"]),
            "mrelease_ns": _med(ok["latency_ns"]),
            "mrelease_p90_ns": float(ok["latency_ns"].quantile(0.9)) if len(ok) else np.nan,
            "reap_ns": _med(ok["reap_ns"]), "spawn_ns": _med(g["spawn_ns"]),
            "shared": float(g["shared"].mean()) if len(g) else np.nan,
            "errors": int((stage != "ok").sum()),
            "einval": int(((stage == "process_mrelease") & (g["err"] == errno.EINVAL)).sum()),
        })  # fmt: skip
    return pd.DataFrame(rows)


def _med(s: pd.Series[Any]) -> float:
    return float(s.median()) if len(s) else np.nan


def _metas(meta: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None) -> dict[str, Any]:
    if meta is None:
        return {}
    ms = [meta] if isinstance(meta, Mapping) else list(meta)
    return {str(m.get("device")): m for m in ms}


def verdicts(
    df: pd.DataFrame, meta: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None = None
) -> list[KillVerdict]:
    """One `KillVerdict` per device of a kill run's samples."""
    metas = _metas(meta)
    out = []
    for device, g in df.groupby("device", observed=True, sort=True):
        release = ((metas.get(str(device)) or {}).get("target") or {}).get("kernel_release")
        out.append(_verdict_one(str(device), g, release))
    return out


def _verdict_one(device: str, df: pd.DataFrame, release: str | None) -> KillVerdict:
    mr = df[df["stage"].astype(str) == "process_mrelease"]
    ctl_or_thr = df["kind"].astype(str).isin(["single", "threaded"])
    errors = int((ctl_or_thr & (df["stage"].astype(str) == "process_mrelease")).sum())
    threaded = df[df["kind"].astype(str) == "threaded"]
    shared = float(threaded["shared"].mean()) if len(threaded) else float("nan")
    if len(mr) and (mr["err"] == errno.ENOSYS).all() and not (df["stage"] == "ok").any():
        why = ("process_mrelease is not in this kernel (ENOSYS: before 5.15); only "
               "pidfd_open + pidfd_send_signal and the reap were measured")  # fmt: skip
        return KillVerdict(device, UNSUPPORTED, why + _version(release, None), None, None,
                           shared, errors)  # fmt: skip
    by_kind = {f.kind: f for f in kill_fits(df)}
    t, c = by_kind.get("threaded"), by_kind.get("single")
    status, finding = _finding(t, c)
    parts = [finding]
    m = by_kind.get("multiprocess")
    if m is not None and np.isfinite(m.slope_ns):
        parts.append(f"multiprocess victims, walked on every kernel: {m.slope_text()}")
    if np.isfinite(shared) and shared < MIN_SHARED_SHARE:
        parts.append(
            f"only {shared:.0%} of threaded kills still shared their mm at process_mrelease "
            "(the victim's threads exited first): the race, not the kernel, may hide a walk"
        )
    if errors:
        parts.append(f"{errors} process_mrelease calls on single/threaded victims failed")
    sentence = "; ".join(parts) + "." + _version(release, status)
    return KillVerdict(device, status, sentence, t, c, shared, errors)


def _finding(t: Fit | None, c: Fit | None) -> tuple[str, str]:
    """(status, sentence) from the threaded fit against the single-threaded control."""
    if t is None or not np.isfinite(t.slope_ns):
        why = t.reason if t is not None else "no threaded kills"
        return INCONCLUSIVE, f"threaded victims cannot be fitted ({why})"
    ctl = f"single-threaded control {c.slope_text()}" if c is not None else "no control"
    above_control = c is None or not np.isfinite(c.ci_high) or t.ci_low > c.ci_high
    if t.complexity == Complexity.ON and above_control:
        return WALKS, (
            f"process_mrelease walks every process for multi-threaded victims: threaded "
            f"{t.slope_text()} ({ctl})"
        )
    if t.complexity == Complexity.O1:
        return NO_WALK, (
            f"process_mrelease does not walk the processes for multi-threaded victims: "
            f"threaded {t.slope_text()} ({ctl})"
        )
    return INCONCLUSIVE, f"threaded {t.slope_text()}, {t.reason} ({ctl})"


def _version(release: str | None, status: str | None) -> str:
    """The cross-check with the kernel release: the walk is in every kernel since 5.15
    that lacks a fix."""
    v = parse_release(release)
    if v is None:
        return " Kernel release unknown: no version cross-check."
    ver = "{}.{}.{}".format(*v)
    if v[:2] < MRELEASE_SINCE:
        return f" {ver} predates process_mrelease (5.15)."
    if status == WALKS:
        return f" {ver} has process_mrelease (5.15+) and no fix for its walk: as expected."
    if status == NO_WALK:
        return (f" {ver} has process_mrelease yet no walk shows: this kernel carries a fix "
                "(or a gate, like the lab's gated experiment).")
    return f" {ver} has process_mrelease (5.15+): a walk is expected unless it carries a fix."
