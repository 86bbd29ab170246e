"""`droidoom cost TRACE --run RUN`: what a trace's oom_score_adj churn costs per hour.

Registered on droidoom.cli.app. The model and its CI are droidoom/cost.py's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
import typer
from rich.table import Table

from .. import cost as c
from .. import replay, store
from ..errors import DataError, UsageError
from ..units import ms
from .app import app, console, err_console


def _label(meta: dict[str, Any]) -> str:
    t = meta.get("target", {})
    vm = meta.get("vm") or {}
    image = Path(str(vm.get("kernel") or vm.get("image") or "")).name
    return f"{meta.get('device')} {t.get('kernel_release', '?')}" + (f" ({image})" if image else "")


@dataclass(frozen=True)
class _Run:
    path: Path
    meta: dict[str, Any]
    df: pd.DataFrame
    is_replay: bool  # a replay of this trace

    @property
    def device(self) -> str:
        """Replays pool by device and kernel (a lab's fixed and regressed VMs apart)."""
        return _label(self.meta)


@dataclass(frozen=True)
class _Plays:
    """Every play of the trace on one device, pooled over its replay runs."""

    runs: tuple[Path, ...]
    offset: int  # the replays' helper processes (same trace and kinds: same targets)
    measured: tuple[c.Measured, ...]


def _pool(runs: list[_Run], trim: float) -> dict[str, _Plays]:
    """Per device: its replay runs' plays as one sample (each run's points kept apart)."""
    by_device: dict[str, list[_Run]] = {}
    for r in runs:
        if r.is_replay:
            by_device.setdefault(r.device, []).append(r)
    out = {}
    for device, rs in by_device.items():
        frames: tuple[list[pd.DataFrame], list[pd.DataFrame]] = ([], [])
        for i, r in enumerate(rs):
            has_sweeps = bool((r.meta.get("replay") or {}).get("sweep_points"))
            for part, frame in zip(c.split_sweep(r.df, r.meta), frames, strict=True):
                if has_sweeps or frame is frames[1]:
                    part = part.assign(point=part["point"].astype("int64") + i * 1_000_000)
                    frame.append(part)
        sweeps = pd.concat(frames[0]) if frames[0] else None
        out[device] = _Plays(tuple(r.path for r in rs), c.helper_processes(rs[0].meta),
                             tuple(c.measured(pd.concat(frames[1]), trim=trim,
                                              sweeps=sweeps)))  # fmt: skip
    return out


def _checks(f: c.MeanFit, plays: _Plays | None, path: Path,
            duration_ns: int) -> list[dict[str, Any]]:  # fmt: skip
    """The estimate of each pooled replay total (same kind, mode and population) by `f`."""
    out: list[dict[str, Any]] = []
    for m in plays.measured if plays is not None else ():
        assert plays is not None
        if (m.kind, m.mode) != (f.kind, f.mode):
            continue
        est = c.estimate(f, np.full(m.writes, m.population + plays.offset), duration_ns)
        out.append({
            "replay_runs": [str(p) for p in plays.runs], "same_run": path in plays.runs,
            "population": m.population, "writes": m.writes, "plays": m.plays, "ci": m.ci,
            "measured_ns": m.total_ns, "measured_ci_ns": [m.total_lo, m.total_hi],
            "estimate_ns": est.total_ns, "estimate_ci_ns": [est.total_lo, est.total_hi],
            # the estimate inside the replay's CI, the replay inside the estimate's
            "estimate_in_measured_ci": bool(m.total_lo <= est.total_ns <= m.total_hi),
            "measured_in_estimate_ci": bool(est.total_lo <= m.total_ns <= est.total_hi),
        })  # fmt: skip
    return out


def _report_run(r: _Run, rt: replay.ReplayTrace, plays: _Plays | None, kind: str | None,
                trim: float) -> dict[str, Any]:  # fmt: skip
    """One run's estimates (and their checks against the replays), and where it goes."""
    priced = c.split_sweep(r.df, r.meta)[0]
    fits = [f for f in c.mean_fits(priced, trim, c.helper_processes(r.meta))
            if kind is None or f.kind == kind]  # fmt: skip
    if not fits:
        raise UsageError(f"{r.path}: no {kind} writes in this run; pick --kind from "
                         f"{', '.join(sorted(set(r.df['kind'].astype(str))))}")  # fmt: skip
    alive = rt.events["alive"].to_numpy(np.int64)  # the phone's processes at each write
    rows = []
    for f in fits:
        e = c.estimate(f, alive, rt.duration_ns)
        rows.append({
            "kind": f.kind, "mode": f.mode, "intercept_ns": f.intercept_ns,
            "slope_ns": f.slope_ns, "per_write_ns": e.per_write_ns,
            "alive_mean": e.x_mean, "total_ns": e.total_ns,
            "cpu_ms_per_hour": e.per_hour(e.total_ns) / 1e6,
            "ci_ms_per_hour": [e.per_hour(e.total_lo) / 1e6, e.per_hour(e.total_hi) / 1e6],
            "replays": _checks(f, plays, r.path, rt.duration_ns),
        })  # fmt: skip
    first = fits[0] if kind else next((f for f in fits if f.kind == "threaded"), fits[0])
    w = c.per_write_cost(first, alive)
    return {
        "run": str(r.path), "label": _label(r.meta), "replay_of_this_trace": r.is_replay,
        "sweep_points": len((r.meta.get("replay") or {}).get("sweep_points") or []),
        "estimates": rows, "where": {"kind": first.kind, "mode": first.mode,
        "transitions": c.transitions(rt, w).to_dict("records"),
        "bursts": c.bursts(rt, w).head(5).to_dict("records")},
    }  # fmt: skip


def analyse(trace: Path, runs: list[Path], kind: str | None = None,
            trim: float = c.TRIM) -> dict[str, Any]:  # fmt: skip
    """The whole cost report as a dict (what `--json` writes)."""
    from .. import store

    rt = replay.load(trace)
    hours = rt.duration_ns / c.HOUR_NS
    out: dict[str, Any] = {"trace": rt.summary(), "notes": rt.notes(), "trim": trim}
    out["trace"]["writes_per_hour"] = len(rt.events) / hours if hours > 0 else None
    loaded = []
    for path in runs:
        info, df = store.read_run(path), store.load(path)
        if df.empty:
            raise DataError(f"{path}: the run holds no samples")
        is_replay = (info.meta.get("replay") or {}).get("sha256") == rt.sha256
        loaded.append(_Run(path, info.meta, df, is_replay))
    pooled = _pool(loaded, trim)  # every estimate of a device is checked against these
    out["runs"] = [_report_run(r, rt, pooled.get(r.device), kind, trim) for r in loaded]
    return out


def _print(rep: dict[str, Any]) -> None:
    t = rep["trace"]
    wph = t["writes_per_hour"]
    console.print(
        f"[bold]{t['trace']}[/]: {t['updates']} updates of {t['processes']} processes by "
        f"{t['writer']} over {t['duration_s'] / 60:.1f} min"
        + (f" = {wph:,.0f} writes/hour" if wph else "")
        + f"; {t['alive_mean']:.0f} processes alive on average",
        highlight=False,
    )
    for n in rep["notes"]:
        err_console.print(f"[yellow]note:[/] {n}")
    for r in rep["runs"]:
        tab = Table(title=f"CPU time in these writes per hour - {r['label']}", title_justify="left")
        for col in ("kind", "mode", "µs/write", "ms/hour", "95% CI"):
            tab.add_column(col, justify="left" if col in ("kind", "mode") else "right")
        for e in r["estimates"]:
            lo, hi = e["ci_ms_per_hour"]
            tab.add_row(e["kind"], e["mode"], f"{e['per_write_ns'] / 1e3:.2f}",
                        f"{e['cpu_ms_per_hour']:.3g}", f"{lo:.3g}..{hi:.3g}")  # fmt: skip
        console.print(tab)
        for e in r["estimates"]:
            for p in e["replays"]:
                (lo, hi), (elo, ehi) = p["measured_ci_ns"], p["estimate_ci_ns"]
                yes = {True: "[green]yes[/]", False: "[red]no[/]"}
                which = ", ".join("this run" if q == r["run"] else Path(q).name
                                  for q in p["replay_runs"])  # fmt: skip
                spread = "over the plays" if p["ci"] == "plays" else "within the run"
                console.print(
                    f"  replay ({which}), {e['kind']} at {p['population']} extra processes, "
                    f"{p['writes']} writes x {p['plays']} plays: measured "
                    f"{ms(p['measured_ns'])} ms (95% CI {spread} "
                    f"{ms(lo)}..{ms(hi)}), estimated {ms(p['estimate_ns'])} ms ({ms(elo)}.."
                    f"{ms(ehi)}); estimate in measured CI: {yes[p['estimate_in_measured_ci']]},"
                    f" measured in estimate CI: {yes[p['measured_in_estimate_ci']]}",
                    highlight=False,
                )
        w = r["where"]
        console.print(f"  where it goes ({w['kind']}): " + ", ".join(
            f"{x['transition']} {x['share']:.0%}" for x in w["transitions"][:5]), highlight=False)
        b = w["bursts"][0]
        console.print(f"  costliest burst: {b['writes']} writes in {b['span_ms']:.0f} ms at "
                      f"{b['start_s']:.0f} s ({b['share']:.1%} of the cost)", highlight=False)


@app.command()
def cost(
    trace: Annotated[Path, typer.Argument(help="Perfetto trace or ftrace text with "
                                         "oom/oom_score_adj_update events.")],
    run: Annotated[list[Path], typer.Option("--run", "-r", help="A run whose per-kind fit "
                   "prices the writes; repeat for more (e.g. a regressed kernel's run).")],
    kind: Annotated[str | None, typer.Option(help="Only this target kind.")] = None,
    trim: Annotated[float, typer.Option(help="Share of each point's slowest writes left out "
                    "of its mean: wall-clock latency also holds time the writer was "
                    "preempted. 0 = the plain mean (wall time).")] = c.TRIM,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the report "
                        "here as JSON.")] = None,
) -> None:
    """CPU time per hour the kernel spends in a trace's oom_score_adj writes, with a 95% CI.

    Each --run's writes give a mean latency line per kind (base + ns per process);
    the trace gives the writes per hour and the processes alive at each write. Replays of
    this trace among the runs (`profile --scenario replay:TRACE`, pooled per device) check
    every estimate of the same device: the measured total of one play is shown next to
    it, with a 95% t interval over the plays when there are 3 or more (else within-run
    time blocks). To check an estimate against replays that saw the same drift, replay
    with `--repeat N`: the run alternates sweep points (lmkd model values, same targets
    and order) with plays of the trace; the sweep points price it, the plays check it.
    Also: which role transitions and bursts cost most.
    """
    if not 0 <= trim < 1:
        raise UsageError(f"--trim must be a share in 0..1 (got {trim})")
    if json_out is not None:  # checked before the work, not after it
        store.check_writable(json_out, "--json")
    rep = analyse(trace, run, kind, trim)
    _print(rep)
    if json_out is not None:
        store.atomic_write(json_out, json.dumps(rep, indent=1, default=float).encode(), "--json")
