"""Parsers for perf / simpleperf text output, and the per-sweep-point symbol table.

Per-sample call stacks (what the symbol table needs) come as two frames:

    psamples: sample (int), tid, time_ns           one row per perf sample
    frames:   sample, depth (0 = leaf), symbol, dso one row per stack frame

from `perf script -F tid,time,ip,sym,dso --ns` (Linux) or `simpleperf report-sample
--show-callchain` (Android). `simpleperf report --csv` has its own parser for the whole-run
summary.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

_PS_HEAD = r"^\s*(?:(?P<comm>\S.*?)\s+)?(?P<tid>\d+)\s+(?P<sec>\d+)\.(?P<frac>\d+):"
_PS_FRAME = r"^\s+(?P<ip>[0-9a-fA-F]+)\s+(?P<sym>.*?)\s*\((?P<dso>[^()]*)\)\s*$"
_SUFFIX = re.compile(r"(\+0x[0-9a-f]+)$|(\.(isra|constprop|part|cold|llvm|lto_priv)(\.\d+)?)+$")


def _empty() -> tuple[pd.DataFrame, pd.DataFrame]:
    ps = pd.DataFrame({"sample": [], "tid": [], "time_ns": []}, dtype=np.int64)
    fr = pd.DataFrame(
        {
            "sample": pd.Series([], dtype=np.int64),
            "depth": pd.Series([], dtype=np.int64),
            "symbol": pd.Series([], dtype=object),
            "dso": pd.Series([], dtype=object),
        }
    )
    return ps, fr


def _to_ns(sec: pd.Series, frac: pd.Series) -> np.ndarray:
    digits = frac.str.len().to_numpy()
    fr = pd.to_numeric(frac).to_numpy(np.int64)
    return pd.to_numeric(sec).to_numpy(np.int64) * 1_000_000_000 + fr * 10 ** (9 - digits)


def parse_perf_script(text: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`perf script -F tid,time,ip,sym,dso --ns` (with -g): a header line per sample
    (`  1234 626.198868039:`), then one indented `ip sym (dso)` line per frame."""
    lines = pd.Series(text.splitlines(), dtype=object)
    if not len(lines):
        return _empty()
    head = lines.str.extract(_PS_HEAD)
    is_head = head["tid"].notna() & ~lines.str.match(_PS_FRAME)
    sample = is_head.cumsum().to_numpy() - 1
    h = head[is_head]
    ps = pd.DataFrame(
        {
            "sample": np.arange(int(is_head.sum()), dtype=np.int64),
            "tid": h["tid"].astype(np.int64).to_numpy(),
            "time_ns": _to_ns(h["sec"], h["frac"]),
        }
    )
    fl = lines[~is_head & (sample >= 0)]
    f = fl.str.extract(_PS_FRAME).dropna(subset=["ip"])
    fr = pd.DataFrame({"sample": sample[f.index], "symbol": f["sym"], "dso": f["dso"]})
    fr["depth"] = fr.groupby("sample").cumcount()
    return ps, fr.reset_index(drop=True)[["sample", "depth", "symbol", "dso"]]


def parse_report_sample(text: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """`simpleperf report-sample --show-callchain` text: `sample:` blocks with indented
    `time:`, `thread_id:`, then `file:`/`symbol:` for the leaf and, under `callchain:`,
    for each caller. Returns (psamples, frames, {"lost_count", "sample_count"})."""
    lines = pd.Series(text.splitlines(), dtype=object)
    if not len(lines):
        ps, fr = _empty()
        return ps, fr, {}
    s = lines.str.strip()
    kv = s.str.extract(r"^(?P<key>[a-z_]+):\s?(?P<val>.*)$")
    top = ~lines.str.match(r"^\s")
    is_sample = top & (s == "sample:")
    block = (top & s.str.endswith(":")).cumsum()  # sample:, lost_situation:, ...
    sample = is_sample.cumsum() - 1
    in_sample = is_sample.groupby(block).transform("max") & ~top
    kv = kv[in_sample]
    sid = sample[in_sample]
    k = kv["key"]
    ps = pd.DataFrame(
        {
            "sample": sid[k == "time"].to_numpy(np.int64),
            "time_ns": pd.to_numeric(kv.loc[k == "time", "val"]).to_numpy(np.int64),
        }
    )
    tids = pd.Series(
        pd.to_numeric(kv.loc[k == "thread_id", "val"]).to_numpy(), sid[k == "thread_id"]
    )
    ps["tid"] = ps["sample"].map(tids.groupby(level=0).first()).fillna(-1).astype(np.int64)
    sym = pd.DataFrame({"sample": sid[k == "symbol"], "symbol": kv.loc[k == "symbol", "val"]})
    dso = pd.DataFrame({"sample": sid[k == "file"], "dso": kv.loc[k == "file", "val"]})
    sym["depth"] = sym.groupby("sample").cumcount()
    dso["depth"] = dso.groupby("sample").cumcount()
    fr = sym.merge(dso, on=["sample", "depth"], how="left")[["sample", "depth", "symbol", "dso"]]
    extra = {}
    for key in ("lost_count", "sample_count"):
        m = re.search(rf"^\s+{key}: (\d+)", text, re.M)
        if m:
            extra[key] = int(m.group(1))
    return ps[["sample", "tid", "time_ns"]], fr.astype({"sample": np.int64}), extra


def base_symbol(sym: pd.Series) -> pd.Series:
    """Symbol names without offsets and compiler clone suffixes
    (`__set_oom_adj.isra.0` -> `__set_oom_adj`, `foo.cold` -> `foo`)."""
    return sym.astype(str).str.replace(_SUFFIX, "", regex=True)


def attribute(
    psamples: pd.DataFrame, writes: pd.DataFrame, group: list[str]
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Label each perf sample with the write it fell into ([t_ns, t_ns + latency_ns] of
    one timed write, same clock) and that write's `group` columns. Samples outside
    every write are dropped; counts of where they fell are returned."""
    w = writes[["t_ns", "latency_ns", *group]].sort_values("t_ns", kind="stable")
    p = psamples.sort_values("time_ns", kind="stable")
    m = pd.merge_asof(p, w, left_on="time_ns", right_on="t_ns", direction="backward")
    inside = m["t_ns"].notna() & (m["time_ns"] <= m["t_ns"] + m["latency_ns"])
    lo, hi = w["t_ns"].min(), (w["t_ns"] + w["latency_ns"]).max()
    span = (p["time_ns"] >= lo) & (p["time_ns"] <= hi) if len(w) else p["time_ns"] < 0
    counts = {
        "samples": int(len(p)),
        "in_writes": int(inside.sum()),
        "between_writes": int(span.sum() - inside.sum()),
        "outside_sweep": int(len(p) - span.sum()),
    }
    out = m[inside].drop(columns=["t_ns", "latency_ns"]).reset_index(drop=True)
    return out.astype(w[group].dtypes.to_dict()), counts


def symbol_table(attributed: pd.DataFrame, frames: pd.DataFrame, group: list[str]) -> pd.DataFrame:
    """Per group and symbol: samples (leaf = self), self_pct, children_samples,
    children_pct (share of the group's samples whose stack contains the symbol),
    group_samples. Symbols are merged across clone suffixes (see base_symbol)."""
    g = attributed[["sample", *group]]
    fr = frames.merge(g, on="sample", how="inner")
    fr["symbol"] = base_symbol(fr["symbol"])
    fr["dso"] = fr["dso"].fillna("").astype(str)
    keys = [*group, "symbol", "dso"]
    self_n = fr[fr["depth"] == 0].groupby(keys, observed=True).size().rename("samples")
    child_n = (
        fr.drop_duplicates(["sample", "symbol", "dso"])
        .groupby(keys, observed=True)
        .size()
        .rename("children_samples")
    )
    tot = g.groupby(group, observed=True).size().rename("group_samples")
    t = pd.concat([self_n, child_n], axis=1).fillna(0).astype(np.int64).reset_index()
    t = t.merge(tot.reset_index(), on=group, how="left")
    t["self_pct"] = 100.0 * t["samples"] / t["group_samples"]
    t["children_pct"] = 100.0 * t["children_samples"] / t["group_samples"]
    cols = [*group, "symbol", "dso", "self_pct", "children_pct", "samples"]
    t = t[[*cols, "children_samples", "group_samples"]]
    return t.sort_values([*group, "children_pct"], ascending=[True] * len(group) + [False])


#: The kernel function whose own code walks every process (for_each_process is inlined).
WALKER = "__set_oom_adj"


def symbol_share(table: pd.DataFrame, symbol: str = WALKER) -> pd.DataFrame:
    """Per mode x kind x population (points pooled): the share of the writes' samples whose
    stack holds `symbol` (children_pct) and that stop in it (self_pct), and the samples
    behind them. From a `symbol_table` (or perf_symbols.parquet of several runs)."""
    keys = [k for k in ("mode", "kind", "population") if k in table.columns]
    group = [k for k in ("run_id", "point", *keys) if k in table.columns]
    totals = table.drop_duplicates(group).groupby(keys, observed=True)["group_samples"].sum()
    mine = table[table["symbol"].astype(str) == symbol].groupby(keys, observed=True)
    out = pd.DataFrame({"samples": totals})
    out["children_pct"] = 100.0 * mine["children_samples"].sum().reindex(totals.index,
                                                                          fill_value=0) / totals
    out["self_pct"] = 100.0 * mine["samples"].sum().reindex(totals.index, fill_value=0) / totals
    return out.reset_index()


# --- simpleperf report --csv / stat --csv -------------------------------------------

_PCT_COLS = ("Overhead", "Children", "Self")
_INT_COLS = ("Sample", "Pid", "Tid", "EventCount", "AccEventCount", "SelfEventCount")


def parse_simpleperf_report_csv(text: str, sep: str = ",") -> tuple[pd.DataFrame, dict[str, Any]]:
    """`simpleperf report --csv`: `Cmdline:`/`Arch:` lines, then per event `Event:`,
    `Samples:`, `Event count:` lines, a blank line, a header row (columns follow --sort
    and --children: `Overhead,...` or `Children,Self,...`, ending in event count and
    EventName columns) and one row per entry. Fields are not quoted, so a Symbol
    containing the separator is rebuilt from the columns around it. Percent columns
    become floats (12.5 for "12.50%"); rows get an `event` column."""
    meta: dict[str, Any] = {"events": []}
    rows: list[dict[str, Any]] = []
    header: list[str] | None = None
    event = None
    for line in text.splitlines():
        if not line.strip() or line[:1].isspace():
            continue  # blank, or an indented call-graph line (report -g)
        key, colon, val = line.partition(": ")
        if colon and key in ("Cmdline", "Arch"):
            meta[key.lower()] = val
        elif colon and key == "Event":
            event = re.sub(r"\s*\(type .*\)$", "", val)
            meta["events"].append({"event": event})
            header = None
        elif colon and key in ("Samples", "Event count", "Time in ns", "Error Callchains"):
            meta["events"][-1][key.lower().replace(" ", "_")] = val
        elif header is None:
            header = line.split(sep)
        else:
            rows.append({"event": event, **_split_row(line.split(sep), header)})
    df = pd.DataFrame(rows)
    for c in df.columns:
        if c in _PCT_COLS:
            df[c] = pd.to_numeric(df[c].str.rstrip("%"), errors="coerce")
        elif c in _INT_COLS:
            df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    for e in meta["events"]:
        for k in ("samples", "event_count"):
            if k in e:
                e[k] = int(e[k])
    return df, meta


def _split_row(fields: list[str], header: list[str]) -> dict[str, Any]:
    if len(fields) > len(header) and "Symbol" in header:
        i = header.index("Symbol")
        tail = len(header) - i - 1
        fields = [
            *fields[:i],
            ",".join(fields[i : len(fields) - tail]),
            *fields[len(fields) - tail :],
        ]
    return dict(zip(header, fields, strict=False))
