"""Join ftrace events of the helper to its timed writes (vectorised, no per-row loops).

Per timed write the helper's pid emits, in order: sys_enter(write), one
oom_score_adj_update (pid = target, oom_score_adj = value written), sys_exit(write).
The same pid also write(2)s its stdout lines and records file, and makes untimed
warmup writes that are not in the samples; so:

1. every oom_score_adj_update of the helper is paired with the sys_enter just before
   it and the sys_exit just after it (by position in the trace, which survives
   microsecond ties), and the pair must enclose it (no other enter/exit in between);
2. each sample takes the first such write whose sys_enter (or, without raw_syscalls,
   the event itself) is at or after t_ns, and keeps it only if it lies within
   [t_ns, t_ns + latency_ns]; stdout/record writes never carry an oom event, and
   warmup writes fall outside every sample's window.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import pandas as pd

from ..schema import KERNEL_COLUMNS
from .base import CaptureRunInfo


def _asof(
    left: pd.DataFrame,
    right: pd.DataFrame,
    left_on: str,
    right_on: str,
    direction: Literal["backward", "forward"],
) -> pd.DataFrame:
    return pd.merge_asof(left, right, left_on=left_on, right_on=right_on, direction=direction)


def kernel_writes(events: pd.DataFrame, helper_pid: int, nr_write: int | None) -> pd.DataFrame:
    """One row per oom_score_adj_update of `helper_pid`: ts_ns (event), oom_pid, oom_adj,
    enter_ts / exit_ts / ret of the enclosing write(2) (NA when not found), key_ts (the
    time to match on: enter_ts, else the event's own ts). `events` needs the columns of
    ftrace_parse.add_write_fields()."""
    ev = events if helper_pid <= 0 else events[events["pid"] == helper_pid]
    ev = ev.sort_values("ts_ns", kind="stable").reset_index(drop=True)
    ev["pos"] = np.arange(len(ev), dtype=np.int64)
    name = ev["event"].astype(str)
    is_sys = name.isin(["sys_enter", "sys_exit"])
    if nr_write is not None:
        is_sys &= ev["nr"] == nr_write
    cols = ["pos", "ts_ns"]
    ooms = ev.loc[name == "oom_score_adj_update", cols + ["oom_pid", "oom_adj"]]
    enters = ev.loc[is_sys & (name == "sys_enter"), cols].rename(
        columns={"pos": "enter_pos", "ts_ns": "enter_ts"}
    )
    exits = ev.loc[is_sys & (name == "sys_exit"), cols + ["ret"]].rename(
        columns={"pos": "exit_pos", "ts_ns": "exit_ts"}
    )
    out = ooms.reset_index(drop=True)
    if len(enters) and len(exits) and len(out):
        out = _asof(out, enters, "pos", "enter_pos", "backward")
        out = _asof(out, exits, "pos", "exit_pos", "forward")
        prev_exit = _asof(out[["pos"]], exits[["exit_pos"]], "pos", "exit_pos", "backward")
        next_enter = _asof(out[["pos"]], enters[["enter_pos"]], "pos", "enter_pos", "forward")
        # enclosing = no exit between our enter and the event, no enter before our exit
        ok = (prev_exit["exit_pos"].isna() | (prev_exit["exit_pos"] < out["enter_pos"])) & (
            next_enter["enter_pos"].isna() | (next_enter["enter_pos"] > out["exit_pos"])
        )
        ok &= out["enter_pos"].notna() & out["exit_pos"].notna()
        out.loc[~ok, ["enter_ts", "exit_ts", "ret"]] = np.nan
    else:
        out = out.assign(enter_ts=np.nan, exit_ts=np.nan, ret=np.nan)
    out = out.drop(columns=[c for c in ("enter_pos", "exit_pos") if c in out]).assign(
        enter_ts=lambda d: d["enter_ts"].astype("Int64"),
        exit_ts=lambda d: d["exit_ts"].astype("Int64"),
        ret=lambda d: d["ret"].astype("Int64"),
    )
    out["key_ts"] = out["enter_ts"].fillna(out["ts_ns"]).astype(np.int64)
    return out.sort_values("key_ts", kind="stable").reset_index(drop=True)


def _expected_pid(samples: pd.DataFrame, info: CaptureRunInfo) -> pd.Series:
    if "target" in samples.columns:
        m = {int(k): int(v.get("pid") or 0) for k, v in info.targets.items()}
        return samples["target"].astype(int).map(m)
    return samples["kind"].astype(str).map(info.pid_of_kind())


def join_writes(
    samples: pd.DataFrame, kw: pd.DataFrame, info: CaptureRunInfo, clock_offset_ns: int = 0
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """`samples` plus KERNEL_COLUMNS (kernel_ns, kernel_adj; NA where no event matched),
    and counts for run.json. `kw` comes from kernel_writes(); trace time minus
    `clock_offset_ns` must be CLOCK_MONOTONIC."""
    n = len(samples)
    kw = kw.copy()
    for c in ("ts_ns", "key_ts", "enter_ts", "exit_ts"):
        kw[c] = kw[c] - clock_offset_ns
    kw["kidx"] = np.arange(len(kw))
    s = pd.DataFrame(
        {
            "row": np.arange(n),
            "t_ns": samples["t_ns"].to_numpy(np.int64),
            "lat": samples["latency_ns"].to_numpy(np.int64),
        }
    ).sort_values("t_ns", kind="stable")
    m = pd.merge_asof(s, kw, left_on="t_ns", right_on="key_ts", direction="forward")
    m = m.sort_values("row").reset_index(drop=True)
    inside = m["key_ts"].notna() & (m["key_ts"] <= m["t_ns"] + m["lat"])
    inside &= ~(m["kidx"].where(inside).duplicated() & inside)  # one event, one write
    expected = _expected_pid(samples, info).to_numpy()
    pid_known = pd.notna(expected) & (expected > 0)
    pid_ok = ~pid_known | (m["oom_pid"].to_numpy(dtype=float, na_value=-1) == expected)
    matched = inside.to_numpy() & pid_ok
    adj_to = samples["adj_to"].to_numpy()
    kernel_ns = (m["exit_ts"] - m["enter_ts"]).where(matched)
    out = samples.copy()
    out["kernel_ns"] = kernel_ns.to_numpy()
    out["kernel_adj"] = m["oom_adj"].where(matched).to_numpy()
    out = out.astype(KERNEL_COLUMNS)
    ok_rows = samples["err"].to_numpy() == 0 if "err" in samples else np.ones(n, bool)
    kns = out["kernel_ns"]
    lat = samples["latency_ns"].astype(np.int64)
    timed = kns.notna().to_numpy()
    within = (m["exit_ts"] <= m["t_ns"] + m["lat"]).fillna(False).to_numpy() & timed
    stats = {
        "writes": int(n),
        "writes_ok": int(ok_rows.sum()),
        "matched": int(matched.sum()),
        "matched_fraction": float(matched[ok_rows].mean()) if ok_rows.any() else None,
        "with_syscall_times": int(timed.sum()),
        "pid_mismatch": int((inside.to_numpy() & ~pid_ok).sum()),
        "adj_mismatch": int(
            (matched & (m["oom_adj"].to_numpy(dtype=float, na_value=np.nan) != adj_to)).sum()
        ),
        "exit_after_write_end": int((timed & ~within).sum()),
        "kernel_le_latency_fraction": (
            float((kns[timed] <= lat[timed]).mean()) if timed.any() else None
        ),
        "helper_oom_events": int(len(kw)),
        "oom_events_outside_samples": int(len(kw) - inside.sum()),  # warmups, errored
    }
    return out, stats


def estimate_clock_offset(samples: pd.DataFrame, kw: pd.DataFrame) -> int | None:
    """trace-clock minus CLOCK_MONOTONIC, estimated from the data alone (for a trace
    clock like `boot` that runs at the monotonic rate but from another origin).

    The helper's last oom events belong to its last timed writes, so candidate offsets
    pair the last successful write with each of the last few events; the candidate
    under which most writes enclose an event wins, and is refined to the median of
    (event key - write midpoint) over those writes."""
    if "err" in samples.columns:
        samples = samples[samples["err"] == 0]
    if not len(kw) or not len(samples):
        return None
    s = samples.sort_values("t_ns")
    t = s["t_ns"].to_numpy(np.int64)
    lat = s["latency_ns"].to_numpy(np.int64)
    key = np.sort(kw["key_ts"].to_numpy(np.int64))

    def fit(off: int) -> tuple[np.ndarray, np.ndarray]:
        idx = np.clip(np.searchsorted(key - off, t), 0, len(key) - 1)
        d = key[idx] - off - t
        return idx, (d >= 0) & (d <= lat)

    cands = [int(key[-j] - t[-1] - lat[-1] // 2) for j in range(1, min(8, len(key)) + 1)]
    off = max(cands, key=lambda c: int(fit(c)[1].sum()))
    for _ in range(2):
        idx, good = fit(off)
        if not good.any():
            break
        off = int(np.median((key[idx] - t - lat // 2)[good]))
    return off


def validation_table(samples: pd.DataFrame) -> pd.DataFrame:
    """Per sweep point and kind: writes, matched fraction, median latency, median kernel
    time and median user-side overhead (latency_ns - kernel_ns) over matched writes."""
    if "kernel_ns" not in samples.columns:
        raise KeyError("samples lack kernel_ns: run with --capture ftrace")
    keys = [c for c in ("point", "population", "mode", "kind") if c in samples.columns]
    df = samples[keys].copy()
    k = samples["kernel_ns"].astype("float64")
    lat = samples["latency_ns"].astype("float64")
    ok = samples["err"] == 0 if "err" in samples else pd.Series(True, index=samples.index)
    df["ok"] = ok.astype(float)
    df["matched"] = (k.notna() & ok).astype(float)
    df["latency_ns"] = lat
    df["kernel_ns"] = k
    df["overhead_ns"] = lat - k
    df["kernel_le_latency"] = (k <= lat).astype(float).where(k.notna())
    g = df.groupby(keys, observed=True, sort=True)
    out = pd.DataFrame(
        {
            "writes": g.size(),
            "matched_fraction": g["matched"].sum() / g["ok"].sum().where(lambda x: x > 0),
            "latency_median_ns": g["latency_ns"].median(),
            "kernel_median_ns": g["kernel_ns"].median(),
            "overhead_median_ns": g["overhead_ns"].median(),
            "kernel_share": g["kernel_ns"].median() / g["latency_ns"].median(),
            "kernel_le_latency_fraction": g["kernel_le_latency"].mean(),
        }
    )
    return out.reset_index()


def overhead_by_group(val: pd.DataFrame) -> dict[str, float | None]:
    """{"<kind>@<population>[/<mode>]": median latency - kernel} from validation_table()."""
    out = {}
    for r in val.to_dict("records"):
        key = f"{r['kind']}@{r['population']}" + (f"/{r['mode']}" if "mode" in r else "")
        v = r["overhead_median_ns"]
        out[key] = None if pd.isna(v) else float(v)
    return out
