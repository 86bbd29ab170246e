"""Human-facing output: rich tables for the terminal (this module) and one self-contained
HTML file (`droidoom.report.html`, re-exported here as `render_html`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

import pandas as pd
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .. import analysis, schema, units
from ..analysis import blocks as blockstats
from ..vocab import Complexity, RunStatus, VerdictStatus
from . import plots
from .html import render_html as render_html  # re-exported: the HTML report
from .rows import STAT_COLS, capture_lines, run_facts, run_metas, scaling_rows, with_visits

_STATUS_STYLE = {
    VerdictStatus.FIXED: "bold green",
    VerdictStatus.REGRESSED: "bold red",
    VerdictStatus.INCONCLUSIVE: "bold yellow",
}
_COMPLEXITY_STYLE: dict[str, str] = {Complexity.ON: "red", Complexity.O1: "green"}


# Terminal tables are narrow on purpose: rich renders at 80 columns when stdout is not a tty
# (CI logs, pipes), so device and mode go in the title and each row is one kind x population.
def _table(title: str, heads: Sequence[str], left: int = 1, caption: str | None = None) -> Table:
    t = Table(
        title=title, title_justify="left", caption=caption, caption_justify="left",
        box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False,
    )  # fmt: skip
    for i, head in enumerate(heads):
        t.add_column(head, justify="left" if i < left else "right", no_wrap=True)
    return t


def _kind_cell(kind: str) -> str:
    return f"[{plots.KIND_COLORS.get(kind, 'default')}]{kind}[/]"


def _latency_tables(stats: pd.DataFrame, console: Console) -> None:
    """One table per device x mode: rows kind x population; n, median, p90, p99 (µs)."""
    for (device, mode), g in stats.groupby(["device", "mode"], observed=True, sort=True):
        has_errors = bool(g["errors"].any())
        heads = ["kind", "population", "n", "median", "p90", "p99"] + ["errors"] * has_errors
        t = _table(f"write latency (µs) - {escape(str(device))}, {mode} writes", heads)
        for kind, k in g.groupby("kind", observed=True, sort=True):  # schema order of kinds
            if len(t.rows):
                t.add_section()
            for i, r in enumerate(k.sort_values("population").itertuples(index=False)):
                cells = [_kind_cell(str(kind)) if i == 0 else "", str(r.population), str(r.count)]
                cells += [units.us(getattr(r, col)) for col, _ in STAT_COLS]
                t.add_row(*cells, *([str(r.errors) if r.errors else ""] * has_errors))
        console.print()
        console.print(t)


def _scaling_tables(fits: Sequence[analysis.Fit], console: Console) -> None:
    """One table per device x mode: rows = kind; slope, CI, base, growth, complexity.
    A kill run's fits have mode "process_mrelease": the call, not writes."""
    groups: dict[tuple[str, str], list[analysis.Fit]] = {}
    for f in fits:
        groups.setdefault((f.device, f.mode), []).append(f)
    for (device, mode), fs in groups.items():
        pops = sorted({(f.pop_min, f.pop_max) for f in fs})
        span = f"populations {pops[0][0]}..{pops[-1][1]}" if pops else ""
        t = _table(
            f"scaling with population - {escape(device)}, "
            + (mode if mode == "process_mrelease" else f"{mode} writes"),
            ["kind", "ns/process", "95% CI", "base µs", "over sweep", "scaling"],
            caption=f"Theil-Sen fit of per-point medians, {span}",
        )
        for row in scaling_rows(fs):
            style = _COMPLEXITY_STYLE.get(row[-1], "yellow")
            t.add_row(_kind_cell(row[2]), *row[3:7], f"[{style}]{row[-1]}[/]")
        console.print()
        console.print(t)


def _device_overview(verdicts: Sequence[analysis.Verdict], console: Console) -> None:
    """Several devices (a farm): one row each, side by side."""
    t = Table(title="devices side by side", title_justify="left", box=box.SIMPLE_HEAD,
              pad_edge=False, show_edge=False, collapse_padding=True)  # fmt: skip
    t.add_column("device", overflow="fold")
    t.add_column("kernel", overflow="fold")
    for head in ("threaded ns/proc", "multiproc ns/proc"):
        t.add_column(head, justify="right")
    t.add_column("verdict")
    t.add_column("version")
    for v in verdicts:
        th, mp = (units.slope(f.slope_ns) if f else "-" for f in (v.threaded, v.multiprocess))
        agree = {True: "agrees", False: "[bold red]DISAGREES[/]", None: "n/a"}[v.consistent]
        status = f"[{_STATUS_STYLE[v.status]}]{v.status}[/]"
        t.add_row(escape(v.device), escape(v.kernel_release or "?"), th, mp, status, agree)
    console.print()
    console.print(t)


def _kernel_table(df: pd.DataFrame, console: Console) -> None:
    """ftrace agreement per point: how much of each write the kernel saw, and whether every
    write was matched to its oom_score_adj_update event."""
    from ..capture import validation_table

    v = with_visits(validation_table(df))
    t = _table(
        "kernel view (ftrace): write syscall vs helper clock",
        ["kind", "population", "sweep", "matched", "kernel µs", "overhead µs", "kernel share"],
        caption="overhead = median(latency_ns - kernel_ns): open/close and user side",
    )
    for r in v.sort_values(["kind", "population", "point"]).itertuples(index=False):
        t.add_row(
            _kind_cell(str(r.kind)), str(r.population), str(r.sweep), f"{r.matched_fraction:.1%}",
            units.us(cast(float, r.kernel_median_ns)), units.us(cast(float, r.overhead_median_ns)),
            f"{r.kernel_share:.0%}",
        )  # fmt: skip
    console.print()
    console.print(t)


def _perf_table(perf: pd.DataFrame, console: Console) -> None:
    """perf's view: the share of each kind's samples inside __set_oom_adj (the walk)."""
    from ..capture.perf_parse import WALKER, symbol_share

    share = symbol_share(perf)
    t = _table(
        f"kernel view (perf): samples in {WALKER}",
        ["kind", "population", "mode", "samples", "in it (children)", "its own code"],
        caption="its own code: the inlined for_each_process walk",
    )
    for r in share.sort_values(["kind", "population"]).itertuples(index=False):
        t.add_row(_kind_cell(str(r.kind)), str(r.population), str(r.mode), str(r.samples),
                  f"{r.children_pct:.0f}%", f"{r.self_pct:.0f}%")  # fmt: skip
    console.print()
    console.print(t)


def render_terminal(
    df: pd.DataFrame,
    meta_list: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None,
    console: Console,
    perf: pd.DataFrame | None = None,
) -> list[analysis.Verdict]:
    """Print run facts, latency summary (µs), scaling fits and verdicts; returns the verdicts.

    Readable at 80 columns. With several devices, a per-device overview table precedes the
    verdict lines. `perf`: the runs' perf_symbols tables (store.read_tables), shown as the
    share of samples in __set_oom_adj.
    """
    metas = run_metas(meta_list)
    for meta in metas:
        f = run_facts(meta)
        style = "green" if f["status"] == RunStatus.COMPLETE else "bold yellow"
        console.print(
            f"[bold]{escape(f['device'])}[/] run {escape(f['run'])} [{style}]{f['status']}[/]: "
            + escape(f"kernel {f['kernel']}, {f['model']}, populations {f['populations']}")
        )
        for text, loud in capture_lines(meta):
            console.print(f"[bold red]{escape(text)}[/]" if loud else f"  {escape(text)}")
    if schema.is_kill(df):  # rows are kills (--measure kill): their own tables and verdict
        _render_kills(df, metas, console)
        return []
    _latency_tables(analysis.summary(df), console)
    if "kernel_ns" in df.columns:
        _kernel_table(df, console)
    if perf is not None and not perf.empty:
        _perf_table(perf, console)
    fits = analysis.fits(df)
    _scaling_tables(fits, console)
    verdicts = analysis.verdict(df, metas, fitted=fits)
    if len(verdicts) > 1:
        _device_overview(verdicts, console)
    console.print()
    for v in verdicts:
        style, device = _STATUS_STYLE[v.status], escape(v.device)
        console.print(f"[{style}]{v.status.upper()}[/] {device}: {escape(v.sentence)}")
    return verdicts


_KILL_STYLE = {"walks": "bold red", "no-walk": "bold green", "inconclusive": "bold yellow",
               "unsupported": "bold yellow"}  # fmt: skip


def _render_kills(df: pd.DataFrame, metas: Sequence[Mapping[str, Any]], console: Console) -> None:
    """A kill run: per kind and population the median of each call (µs), the share of kills
    whose mm was still shared at process_mrelease, failures; the fits; the kill verdict."""
    from ..analysis import kill

    table = kill.summary(df)
    for device, g in table.groupby("device", observed=True, sort=True):
        heads = ["kind", "pop", "n", "kill", "mrelease", "p90", "reap", "spawn", "shared", "err"]
        t = _table(f"kill path (µs) - {escape(str(device))}", heads,
                   caption="medians; kill = pidfd_send_signal; spawn is before the clock; "
                   "shared: mm_users > 1 at process_mrelease")  # fmt: skip
        for kind, k in g.groupby("kind", observed=True, sort=True):
            if len(t.rows):
                t.add_section()
            for i, r in enumerate(k.sort_values("population").itertuples(index=False)):
                cells = [_kind_cell(str(kind)) if i == 0 else "", str(r.population), str(r.n)]
                cols = ("kill_ns", "mrelease_ns", "mrelease_p90_ns", "reap_ns", "spawn_ns")
                cells += [units.us(float(cast(float, getattr(r, c)))) for c in cols]
                cells += [f"{r.shared:.0%}", str(r.errors) if r.errors else ""]
                t.add_row(*cells)
        console.print()
        console.print(t)
    _scaling_tables(kill.kill_fits(df), console)
    console.print()
    for v in kill.verdicts(df, metas):
        console.print(f"[{_KILL_STYLE[v.status]}]KILL {v.status.upper()}[/] "
                      f"{escape(v.device)}: {escape(v.sentence)}")  # fmt: skip


def _ratio(x: float) -> str:
    """1.04, 0.82, 12.6: two decimals resolve a +-10% threshold; big ratios need fewer."""
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


_DECISION_CELL = {
    analysis.SAME: "[green]SAME[/]",
    analysis.UNKNOWN: "[yellow]UNKNOWN[/]",
    analysis.CONTROL: "[dim]control[/]",
}


def _decision_cell(r: Mapping[Any, Any]) -> str:
    """A row's decision as the table shows it: DIFFERENT reads REGRESSION (slower) or
    faster, so the one word says which way."""
    if r["regression"]:
        return "[bold red]REGRESSION[/]"
    if r["improvement"]:
        return "[green]faster[/]"
    if r["decision"] == analysis.DIFFERENT:  # beyond the threshold by the ratio, yet neither
        return "[red]DIFFERENT[/]"
    return _DECISION_CELL.get(str(r["decision"]), str(r["decision"]))


def _mde_cell(x: float) -> str:
    return f"x{_ratio(x)}" if x == x and x != float("inf") else "-"


def detectable_line(result: analysis.Comparison) -> str:
    """One line on what these runs could have seen: 'these runs could detect changes of
    x1.04 or more at population 400, x1.07 at 800 (threshold x1.05)'."""
    found = result.detectable()
    if not found:
        return ""
    parts = []
    for i, (pop, m) in enumerate(found.items()):
        where = "all populations pooled" if pop == "all" else f"population {pop}"
        if m == float("inf"):
            parts.append(f"none at {where} (too few blocks)")
        else:
            parts.append(f"x{m:.2f}{' or more' if i == 0 else ''} at {where}")
    return (f"these runs could detect changes of {', '.join(parts)} "
            f"(threshold x{result.max_ratio:.2f})")  # fmt: skip


def compare_table(result: analysis.Comparison, console: Console, whole: bool = True) -> None:
    """Print a `compare` result: a table per device x mode with each point's decision
    (SAME, REGRESSION / faster for DIFFERENT, UNKNOWN; the control is not judged), ratio,
    CI and minimum detectable effect, then what the runs could detect and the outcome.
    `whole`: every BASE point was compared with data (else "no regression" is only said
    of those)."""
    conf = f"{result.confidence:.0%} CI"
    table = result.table
    split = [k for k in ("device", "mode") if k in table.columns]
    keys = [k for k in ("kind", "population") if k in table.columns]
    for group_key, g in table.groupby(split, observed=True, sort=True) if split else [((), table)]:
        labels = [str(x) for x in (group_key if isinstance(group_key, tuple) else (group_key,))]
        where = ", ".join(labels[:1] + [f"{m} writes" for m in labels[1:]])
        if result.paired:
            where = f"base {result.paired[0]} vs new {result.paired[1]}" + where[len(labels[0]) :]
        console.print()
        heads = [*keys, "base", "new", "new/base", conf, "MDE", "decision"]
        t = _table(f"new / base median latency (µs) - {escape(where)}", heads)
        prev = None
        for r in g.to_dict("records"):  # one row per group: a few dozen at most
            kind = str(r.get("kind", ""))
            if prev is not None and kind != prev:
                t.add_section()  # a blank line between kinds
            cells = [_kind_cell(kind) if kind != prev else ""] if "kind" in keys else []
            cells += [str(r["population"])] if "population" in keys else []
            prev = kind
            ci = f"{_ratio(r['ci_low'])}..{_ratio(r['ci_high'])}" if r["ci_low"] == r[
                "ci_low"] else "-"  # fmt: skip
            medians = units.us(r["base_median_ns"]), units.us(r["new_median_ns"])
            t.add_row(*cells, *medians, _ratio(r["ratio"]), ci, _mde_cell(r["mde"]),
                      _decision_cell(r))  # fmt: skip
        console.print(t)
    _unknown_lines(result, keys, console)
    if line := detectable_line(result):
        console.print(line)
    rule = (f"DIFFERENT: p <= {blockstats.ALPHA:g} (KS / Mann-Whitney U over blocks) and "
            f"new/base beyond x{result.max_ratio:.2f}")  # fmt: skip
    n = len(result.regressions)
    if n:
        console.print(f"[bold red]{n} regression(s)[/] ({rule}).")
    elif len(result.unknown) or not whole:
        console.print(f"no regression among the points compared ({rule}), but not every "
                      "point could be judged")  # fmt: skip
    elif k := len(result.improvements):
        console.print(f"[green]no regression[/]: {k} point(s) faster, the others SAME ({rule}).")
    else:
        console.print(f"[green]no regression[/]: every point SAME (MDE within "
                      f"x{result.max_ratio:.2f}; {rule}).")  # fmt: skip


def _unknown_lines(result: analysis.Comparison, keys: list[str], console: Console) -> None:
    """Why each UNKNOWN point could not be judged, grouped by reason."""
    unknown = result.unknown
    if unknown.empty:
        return
    for why, g in unknown.groupby("why", sort=True):
        pts = ", ".join(" ".join(str(r[k]) for k in keys) for r in g.to_dict("records"))
        console.print(f"[yellow]UNKNOWN[/] ({why}): {pts}", highlight=False)


# --------------------------------------------------------------------------- HTML
