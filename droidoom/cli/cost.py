"""`droidoom cost TRACE --run RUN`: what a trace's oom_score_adj churn costs per hour.

Registered on droidoom.cli.app. The model and its CI are droidoom/cost.py's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.table import Table

from .. import cost as c
from ..errors import DataError, UsageError
from ..units import ms
from .app import app, console, err_console


def _label(meta: dict) -> str:
    t = meta.get("target", {})
    vm = meta.get("vm") or {}
    image = Path(str(vm.get("kernel") or vm.get("image") or "")).name
    return f"{meta.get('device')} {t.get('kernel_release', '?')}" + (f" ({image})" if image else "")


def analyse(trace: Path, runs: list[Path], kind: str | None = None,
            trim: float = c.TRIM) -> dict:
    """The whole cost report as a dict (what `--json` writes)."""
    from .. import replay, store

    rt = replay.load(trace)
    hours = rt.duration_ns / c.HOUR_NS
    out: dict = {"trace": rt.summary(), "notes": rt.notes(), "trim": trim, "runs": []}
    out["trace"]["writes_per_hour"] = len(rt.events) / hours if hours > 0 else None
    alive = rt.events["alive"].to_numpy(np.int64)  # the phone's processes at each write
    loaded = []
    for path in runs:
        info, df = store.read_run(path), store.load(path)
        if df.empty:
            raise DataError(f"{path}: the run holds no samples")
        is_replay = (info.meta.get("replay") or {}).get("sha256") == rt.sha256
        loaded.append((path, info, df, is_replay))
    # replays of this trace, by device: each run's estimate is checked against them
    replays: dict[str, list] = {}
    for path, info, df, is_replay in loaded:
        if is_replay:
            by_device = replays.setdefault(str(info.meta.get("device")), [])
            by_device.append((path, c.helper_processes(info.meta), c.measured(df, trim=trim)))
    for path, info, df, is_replay in loaded:
        offset = c.helper_processes(info.meta)
        fits = [f for f in c.mean_fits(df, trim, offset) if kind is None or f.kind == kind]
        if not fits:
            raise UsageError(f"{path}: no {kind} writes in this run; pick --kind from "
                             f"{', '.join(sorted(set(df['kind'].astype(str))))}")  # fmt: skip
        meas = [(rp, off, m) for rp, off, ms in replays.get(str(info.meta.get("device")), [])
                for m in ms]  # fmt: skip
        rows = []
        for f in fits:
            e = c.estimate(f, alive, rt.duration_ns)
            row = {
                "kind": f.kind, "mode": f.mode, "intercept_ns": f.intercept_ns,
                "slope_ns": f.slope_ns, "per_write_ns": e.per_write_ns,
                "alive_mean": e.x_mean, "total_ns": e.total_ns,
                "cpu_ms_per_hour": e.per_hour(e.total_ns) / 1e6,
                "ci_ms_per_hour": [e.per_hour(e.total_lo) / 1e6, e.per_hour(e.total_hi) / 1e6],
                "replays": [],
            }  # fmt: skip
            for rp, off, m in meas:
                if (m.kind, m.mode) != (f.kind, f.mode):
                    continue
                est = c.estimate(f, np.full(m.writes, m.population + off), rt.duration_ns)
                row["replays"].append({
                    "replay_run": str(rp), "same_run": rp == path,
                    "population": m.population, "writes": m.writes, "measured_ns": m.total_ns,
                    "measured_ci_ns": [m.total_lo, m.total_hi], "estimate_ns": est.total_ns,
                    "estimate_ci_ns": [est.total_lo, est.total_hi],
                    # the estimate inside the replay's CI, the replay inside the estimate's
                    "estimate_in_measured_ci": bool(m.total_lo <= est.total_ns <= m.total_hi),
                    "measured_in_estimate_ci": bool(est.total_lo <= m.total_ns <= est.total_hi),
                })  # fmt: skip
            rows.append(row)
        first = fits[0] if kind else next((f for f in fits if f.kind == "threaded"), fits[0])
        w = c.per_write_cost(first, alive)
        out["runs"].append({
            "run": str(path), "label": _label(info.meta), "replay_of_this_trace": is_replay,
            "estimates": rows, "where": {"kind": first.kind, "mode": first.mode,
            "transitions": c.transitions(rt, w).to_dict("records"),
            "bursts": c.bursts(rt, w).head(5).to_dict("records")},
        })  # fmt: skip
    return out


def _print(rep: dict) -> None:
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
                which = "this run" if p["same_run"] else Path(p["replay_run"]).name
                console.print(
                    f"  replay ({which}), {e['kind']} at {p['population']} extra processes, "
                    f"{p['writes']} writes: measured {ms(p['measured_ns'])} ms (95% CI "
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
    this trace among the runs (`profile --scenario replay:TRACE`) check every estimate of
    the same device: their measured totals are shown next to it. Also: which role
    transitions and bursts cost most.
    """
    if not 0 <= trim < 1:
        raise UsageError(f"--trim must be a share in 0..1 (got {trim})")
    rep = analyse(trace, run, kind, trim)
    _print(rep)
    if json_out is not None:
        json_out.write_text(json.dumps(rep, indent=1, default=float))
