"""Display rows shared by the terminal and the HTML report: run facts and scaling fits."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .. import analysis, units
from ..capture.base import MATCHED_LOUD_BELOW
from ..fingerprint import fingerprint

#: Latency statistics shown per kind x population: summary column -> label.
STAT_COLS = (("median_ns", "median"), ("p90_ns", "p90"), ("p99_ns", "p99"))


def run_metas(
    metas: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None,
) -> list[Mapping[str, Any]]:
    """One run.json dict, several, or store.RunInfo objects, as a list of dicts."""
    if metas is None:
        return []
    metas = [metas] if isinstance(metas, Mapping) else list(metas)
    return [getattr(m, "meta", m) for m in metas]  # store.RunInfo works too


def run_facts(meta: Mapping[str, Any]) -> dict[str, str]:
    """The run facts worth showing, as display strings."""
    target, spec = meta.get("target") or {}, meta.get("spec") or {}
    pops = spec.get("populations") or []
    return {
        "run": str(meta.get("run_id", "?")),
        "device": str(meta.get("device", "?")),
        "status": str(meta.get("status", "?")),
        "kernel": str(target.get("kernel_release", "?")),
        "model": str(target.get("model") or "-"),
        "abi / cpus": f"{target.get('abi', '?')} / {target.get('cpus', '?')}",
        "populations": ", ".join(map(str, pops)) if pops else "-",
        "kinds": ", ".join(spec.get("kinds") or []) or "-",
        "modes": ", ".join(spec.get("modes") or []) or "-",
        "scenario": str(spec.get("scenario", "?")),
        "rate": f"{rate:g}/s" if isinstance(rate := spec.get("rate"), int | float) and rate
        else "back to back",
        "captures": ", ".join(sorted(meta.get("captures") or {})) or "clock",
        "group": fingerprint(meta),
        "writes / threads": f"{spec.get('writes', '?')} / {spec.get('target_threads', '?')}",
        "started": str(meta.get("started", "?")),
        "farm": str(meta.get("farm_id") or "-"),
    }


def capture_lines(meta: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """(sentence, loud) per kernel-event capture of a run (ftrace, perfetto): how many
    writes matched their event and, for perfetto, how the trace clock's offset was found.
    Loud when under MATCHED_LOUD_BELOW of the writes matched."""
    out = []
    for name, cap in sorted((meta.get("captures") or {}).items()):
        frac = cap.get("matched_fraction") if isinstance(cap, Mapping) else None
        if not isinstance(frac, int | float):
            continue
        run = str(meta.get("run_id", "?"))
        how = f"; clock offset: {cap['clock']}" if cap.get("clock_source") else ""
        if frac < MATCHED_LOUD_BELOW:
            out.append((
                f"{name} (run {run}): ONLY {frac:.1%} OF THE WRITES MATCHED THEIR KERNEL EVENT "
                f"(under {MATCHED_LOUD_BELOW:.0%}): its columns describe part of the run, "
                f"not all of it{how}", True))  # fmt: skip
        else:
            out.append((f"{name} (run {run}): {frac:.1%} of the writes matched their kernel "
                        f"event{how}", False))  # fmt: skip
    return out


def scaling_rows(fits: Sequence[analysis.Fit]) -> list[list[str]]:
    """One row of display strings per fit (the last cell is the complexity)."""
    rows = []
    for f in fits:
        ci = "-" if pd.isna(f.ci_low) else f"{f.ci_low:.2f}..{f.ci_high:.2f}"
        slope = "-" if pd.isna(f.slope_ns) else f"{f.slope_ns:+.2f}"
        growth = "-" if pd.isna(f.growth) else units.growth(f.growth)
        rows.append([f.device, f.mode, f.kind, slope, ci, units.us(f.base_ns), growth,
                     f"{f.pop_min}..{f.pop_max} ({f.n_populations})", f.complexity])  # fmt: skip
    return rows


def with_visits(table: pd.DataFrame) -> pd.DataFrame:
    """A per-point table with a `sweep` column: "up" for a population's first visit,
    "down" for its later one (updown sweeps visit all but the top population twice), ""
    when visited once. Keyed by run, mode and kind where the table has them."""
    keys = [k for k in ("run_id", "mode", "kind", "population") if k in table.columns]
    out = table.sort_values("point").copy()
    nth = out.groupby(keys, observed=True).cumcount()
    visits = out.groupby(keys, observed=True)["point"].transform("size")
    out["sweep"] = np.where(visits < 2, "", np.where(nth == 0, "up", "down"))
    return out


def report_frames(
    df: pd.DataFrame, metas: Sequence[Mapping[str, Any]]
) -> list[tuple[pd.DataFrame, list[int]]]:
    """`df` split as fingerprint.report_groups splits `metas`: (rows, indices of their
    run.jsons) per group of runs a report may show together."""
    from ..fingerprint import report_groups

    ids = df["run_id"].astype(str)
    return [(df[ids.isin({str(metas[i].get("run_id")) for i in idx})], idx)
            for idx in report_groups(metas)]  # fmt: skip
