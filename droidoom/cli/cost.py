"""`droidoom cost TRACE --run RUN`: what a trace's oom_score_adj churn costs per hour.

Registered on droidoom.cli.app. The model and its CI are droidoom/analysis/cost.py's.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ..errors import UsageError
from ..units import ms
from .app import app, console, err_console

#: cost.TRIM, here so that `--help` needs no scipy (a test keeps the two equal).
TRIM = 0.05


def _print_kills(k: dict[str, Any]) -> None:
    """lmkd's kills in the trace and, per --measure kill run, what they cost per hour."""
    if not k["count"]:
        console.print("kills: the trace shows no lmkd kill (no lowmemorykiller / lmk / "
                      "kill_one_process atrace marks, no SIGKILL sent by lmkd)", highlight=False)
        return
    how = {"atrace": "lmkd's atrace marks", "signal": "SIGKILLs lmkd sent (signal_generate: "
           "lmkd's atrace marks are not in the trace)"}[k["source"]]  # fmt: skip
    rate = f" = {k['per_hour']:,.1f} kills/hour" if k["per_hour"] else ""
    console.print(f"kills: {k['count']} by lmkd ({how}){rate}; {k['alive_mean']:.0f} processes "
                  "alive at them on average", highlight=False)  # fmt: skip
    for r in k["runs"]:
        tab = Table(title=f"CPU time in lmkd's kill calls per hour - {r['label']}",
                    title_justify="left", caption="pidfd_open + pidfd_send_signal + "
                    "process_mrelease, at the processes alive at each kill")  # fmt: skip
        for col in ("victim kind", "µs/kill", "ms/hour", "95% CI"):
            tab.add_column(col, justify="left" if col == "victim kind" else "right")
        for e in r["estimates"]:
            if e["cpu_ms_per_hour"] is None:
                per_hour, ci = "-", "-"
            else:
                lo, hi = e["ci_ms_per_hour"]
                per_hour, ci = f"{e['cpu_ms_per_hour']:.3g}", f"{lo:.3g}..{hi:.3g}"
            tab.add_row(e["kind"], f"{e['per_kill_ns'] / 1e3:.1f}", per_hour, ci)
        console.print(tab)


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
            at_least = ">= " if e.get("lower_bound") else ""  # a lossy trace: a lower bound
            if e["cpu_ms_per_hour"] is None:  # no interval in the trace: no rate
                per_hour, ci = "-", "-"
            else:
                lo, hi = e["ci_ms_per_hour"]
                per_hour, ci = f"{at_least}{e['cpu_ms_per_hour']:.3g}", f"{lo:.3g}..{hi:.3g}"
            tab.add_row(e["kind"], e["mode"], f"{e['per_write_ns'] / 1e3:.2f}", per_hour, ci)
        console.print(tab)
        if t.get("no_rate"):
            writes = "its write" if t["updates"] == 1 else f"its {t['updates']} writes"
            for e in r["estimates"]:
                lo, hi = e["total_ci_ns"]
                console.print(f"  per hour: cannot be estimated (no interval between updates)"
                              f"; {writes} ({e['kind']}) cost "
                              f"{e['total_ns'] / 1e3:.3g} µs (95% CI {lo / 1e3:.3g}.."
                              f"{hi / 1e3:.3g})", highlight=False)  # fmt: skip
        if any(e.get("lower_bound") for e in r["estimates"]):
            console.print(f"  lower bounds: the trace lost events ({t['lost']:,} in all)",
                          highlight=False)  # fmt: skip
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
    if "kills" in rep:
        _print_kills(rep["kills"])


@app.command()
def cost(
    trace: Annotated[Path, typer.Argument(help="Perfetto trace or ftrace text with "
                                         "oom/oom_score_adj_update events.")],
    run: Annotated[list[Path], typer.Option("--run", "-r", help="A run whose per-kind fit "
                   "prices the writes (a --measure kill run: the kills); repeat for more "
                   "(e.g. a regressed kernel's run).")],
    kind: Annotated[str | None, typer.Option(help="Only this target kind.")] = None,
    trim: Annotated[float, typer.Option(help="Share of each point's slowest writes left out "
                    "of its mean: wall-clock latency also holds time the writer was "
                    "preempted. 0 = the plain mean (wall time).")] = TRIM,
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
    Also: which role transitions and bursts cost most. The kills lmkd made in the trace
    (its atrace marks, else the SIGKILLs it sent) are counted per hour and priced by any
    `profile --measure kill` run among the --run's at the processes alive at each kill.
    """
    if not 0 <= trim < 1:
        raise UsageError(f"--trim must be a share in 0..1 (got {trim})")
    from .. import store  # pandas: only when a trace is priced (not for --help)
    from ..analysis.cost import analyse

    if json_out is not None:  # checked before the work, not after it
        store.check_writable(json_out, "--json")

    rep = analyse(trace, run, kind, trim)
    _print(rep)
    if json_out is not None:
        store.atomic_write(json_out, json.dumps(rep, indent=1, default=float).encode(), "--json")
