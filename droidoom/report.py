"""Human-facing output: rich tables for the terminal, one self-contained HTML file.

The HTML report embeds its figures as base64 PNG data URIs and its CSS inline, so it can be
mailed or archived as a single file and opened offline.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from matplotlib.figure import Figure
from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import analysis, plots, units
from .schema import KINDS
from .store import atomic_write
from .vocab import Complexity, RunStatus, VerdictStatus

_STATUS_STYLE = {
    VerdictStatus.FIXED: "bold green",
    VerdictStatus.REGRESSED: "bold red",
    VerdictStatus.INCONCLUSIVE: "bold yellow",
}
_STAT_COLS = (("median_ns", "median"), ("p90_ns", "p90"), ("p99_ns", "p99"))


def _metas(
    metas: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None,
) -> list[Mapping[str, Any]]:
    if metas is None:
        return []
    metas = [metas] if isinstance(metas, Mapping) else list(metas)
    return [getattr(m, "meta", m) for m in metas]  # store.RunInfo works too


def _facts(meta: Mapping[str, Any]) -> dict[str, str]:
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
        "writes / threads": f"{spec.get('writes', '?')} / {spec.get('target_threads', '?')}",
        "started": str(meta.get("started", "?")),
        "farm": str(meta.get("farm_id") or "-"),
    }


def _wide_summary(stats: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per device x mode: rows = population, columns = (kind, stat) in µs text (HTML)."""
    out = {}
    for (device, mode), g in stats.groupby(["device", "mode"], observed=True, sort=True):
        kinds = [k for k in KINDS if k in set(g["kind"].astype(str))]
        table = pd.DataFrame(index=sorted(g["population"].unique()))
        for kind in kinds:
            k = g[g["kind"].astype(str) == kind].set_index("population")
            for col, label in _STAT_COLS:
                table[(kind, label)] = k[col].reindex(table.index).map(units.us)
        errors = g.groupby("population")["errors"].sum().reindex(table.index)
        if errors.any():
            table[("", "errors")] = errors.astype(str)
        out[(str(device), str(mode))] = table
    return out


def _scaling_rows(fits: Sequence[analysis.Fit]) -> list[list[str]]:
    rows = []
    for f in fits:
        ci = "-" if pd.isna(f.ci_low) else f"{f.ci_low:.2f}..{f.ci_high:.2f}"
        slope = "-" if pd.isna(f.slope_ns) else f"{f.slope_ns:+.2f}"
        growth = "-" if pd.isna(f.growth) else units.growth(f.growth)
        rows.append([f.device, f.mode, f.kind, slope, ci, units.us(f.base_ns), growth,
                     f"{f.pop_min}..{f.pop_max} ({f.n_populations})", f.complexity])  # fmt: skip
    return rows


_SCALING_HEAD = ["device", "mode", "kind", "ns/process", "95% CI", "base µs", "over sweep",
                 "populations", "scaling"]  # fmt: skip
_COMPLEXITY_STYLE = {Complexity.ON: "red", Complexity.O1: "green"}


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
                cells += [units.us(getattr(r, col)) for col, _ in _STAT_COLS]
                t.add_row(*cells, *([str(r.errors) if r.errors else ""] * has_errors))
        console.print()
        console.print(t)


def _scaling_tables(fits: Sequence[analysis.Fit], console: Console) -> None:
    """One table per device x mode: rows = kind; slope, CI, base, growth, complexity."""
    groups: dict[tuple[str, str], list[analysis.Fit]] = {}
    for f in fits:
        groups.setdefault((f.device, f.mode), []).append(f)
    for (device, mode), fs in groups.items():
        pops = sorted({(f.pop_min, f.pop_max) for f in fs})
        span = f"populations {pops[0][0]}..{pops[-1][1]}" if pops else ""
        t = _table(
            f"scaling with population - {escape(device)}, {mode} writes",
            ["kind", "ns/process", "95% CI", "base µs", "over sweep", "scaling"],
            caption=f"Theil-Sen fit of per-point medians, {span}",
        )
        for row in _scaling_rows(fs):
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
    from .capture import validation_table

    v = validation_table(df)
    t = _table(
        "kernel view (ftrace): write syscall vs helper clock",
        ["kind", "population", "matched", "kernel µs", "overhead µs", "kernel share"],
        caption="overhead = median(latency_ns - kernel_ns): open/close and user side",
    )
    for r in v.sort_values(["kind", "population"]).itertuples(index=False):
        t.add_row(
            _kind_cell(str(r.kind)), str(r.population), f"{r.matched_fraction:.1%}",
            units.us(r.kernel_median_ns), units.us(r.overhead_median_ns), f"{r.kernel_share:.0%}",
        )  # fmt: skip
    console.print()
    console.print(t)


def render_terminal(
    df: pd.DataFrame,
    meta_list: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None,
    console: Console,
) -> list[analysis.Verdict]:
    """Print run facts, latency summary (µs), scaling fits and verdicts; returns the verdicts.

    Readable at 80 columns. With several devices, a per-device overview table precedes the
    verdict lines.
    """
    metas = _metas(meta_list)
    for meta in metas:
        f = _facts(meta)
        style = "green" if f["status"] == RunStatus.COMPLETE else "bold yellow"
        console.print(
            f"[bold]{escape(f['device'])}[/] run {escape(f['run'])} [{style}]{f['status']}[/]: "
            + escape(f"kernel {f['kernel']}, {f['model']}, populations {f['populations']}")
        )
    _latency_tables(analysis.summary(df), console)
    if "kernel_ns" in df.columns:
        _kernel_table(df, console)
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


def _ratio(x: float) -> str:
    """1.04, 0.82, 12.6: two decimals resolve a +-10% threshold; big ratios need fewer."""
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def compare_table(result: analysis.Comparison, console: Console) -> None:
    """Print a `compare` result: a table per device x mode, regressions in red."""
    pct = f"{result.max_ratio - 1:+.0%}"
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
        heads = [*keys, "base µs", "new µs", "new/base", conf, ""]
        t = _table(f"new / base median latency - {escape(where)}", heads)
        prev = None
        for r in g.to_dict("records"):  # one row per group: a few dozen at most
            kind = str(r.get("kind", ""))
            if prev is not None and kind != prev:
                t.add_section()  # a blank line between kinds
            cells = [_kind_cell(kind) if kind != prev else ""] if "kind" in keys else []
            cells += [str(r["population"])] if "population" in keys else []
            prev = kind
            flag = "[bold red]REGRESSION[/]" if r["regression"] else ""
            flag = "[green]faster[/]" if r["improvement"] else flag
            ci = f"{_ratio(r['ci_low'])}..{_ratio(r['ci_high'])}"
            medians = units.us(r["base_median_ns"]), units.us(r["new_median_ns"])
            t.add_row(*cells, *medians, _ratio(r["ratio"]), ci, flag)
        console.print(t)
    n = len(result.regressions)
    if n:
        console.print(f"[bold red]{n} regression(s)[/]: {conf} lower bound above {pct}.")
    else:
        console.print(f"[green]no regression[/] (threshold: {conf} lower bound above {pct}).")


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;
max-width:1180px;color:#222;line-height:1.4}
h1{font-size:1.5em;margin-bottom:0}h2{border-bottom:2px solid #ddd;padding-bottom:4px;
margin-top:2em}.sub{color:#666;margin-top:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-weight:600;
font-size:12px;text-transform:uppercase}
.fixed{background:#2e7d32}.regressed{background:#c62828}.inconclusive{background:#b58900}
.complete{color:#2e7d32;font-weight:600}.partial{color:#b58900;font-weight:700}
.on{color:#c62828;font-weight:600}.o1{color:#2e7d32;font-weight:600}.inc{color:#b58900}
.verdict{margin:8px 0;padding:8px 12px;background:#fafafa;border-left:4px solid #ccc}
figure{margin:12px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{color:#555;font-size:13px}.warn{background:#fff8e1;padding:8px 12px}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _html_table(
    head: Sequence[str], rows: Iterable[Sequence], left: int = 0, groups: Sequence = ()
) -> str:
    """A table; the first `left` columns are left-aligned. Cells are escaped unless they are
    tuples ("raw", html). `groups` = [(label, n_columns), ...] adds a spanning header row."""

    def cell(i, v, tag):
        cls = ' class="l"' if i < left else ""
        text = v[1] if isinstance(v, tuple) and v[0] == "raw" else _e(v)
        return f"<{tag}{cls}>{text}</{tag}>"

    out = ["<table>"]
    if groups:
        out += ["<tr>", *(f"<th colspan='{n}'>{_e(g)}</th>" for g, n in groups), "</tr>"]
    out += ["<tr>", *(cell(i, h, "th") for i, h in enumerate(head)), "</tr>"]
    for row in rows:
        out += ["<tr>", *(cell(i, v, "td") for i, v in enumerate(row)), "</tr>"]
    return "".join(out + ["</table>"])


def _verdict_html(v: analysis.Verdict) -> str:
    consistent = {True: "consistent", False: "DISAGREES", None: "n/a"}[v.consistent]
    return (
        f'<div class="verdict"><span class="badge {v.status}">{_e(v.status)}</span> '
        f"<b>{_e(v.device)}</b> ({_e(v.mode)} writes; kernel {_e(v.kernel_release or '?')}, "
        f"version says {_e(v.expectation)}, {consistent})<br>{_e(v.sentence)}</div>"
    )


def render_html(
    df: pd.DataFrame,
    metas: Mapping[str, Any] | Iterable[Mapping[str, Any]] | None,
    path: str | Path,
    *,
    logy: bool = False,
    figures: Sequence[tuple[str, str, Figure]] | None = None,
) -> Path:
    """Write one self-contained HTML report (inline CSS, figures as data URIs) to `path`.

    Sections: verdict per device, runs, with several devices a side-by-side overview (table
    and figure), scaling fits, latency summary, figures. `figures` defaults to
    `plots.standard_figures(df, logy=logy)` (pass them to reuse figures already drawn).
    """
    figs = list(figures) if figures is not None else plots.standard_figures(df, logy=logy)
    metas, path = _metas(metas), Path(path)
    fits = analysis.fits(df)
    verdicts = analysis.verdict(df, metas, fitted=fits)
    devices = sorted(df["device"].astype(str).unique())
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>droidoom report - {_e(', '.join(devices))}</title><style>{_CSS}</style>",
        "</head><body><h1>droidoom: oom_score_adj write latency</h1>",
        f"<p class='sub'>{units.count(len(df))} timed writes, {len(devices)} device(s), "
        f"{df['run_id'].nunique()} run(s); generated "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}</p>",
        "<h2>Verdict</h2>",
        *map(_verdict_html, verdicts),
    ]
    if metas:
        facts = [_facts(m) for m in metas]
        head = list(facts[0])
        rows = [
            [("raw", f"<span class='{_e(v)}'>{_e(v)}</span>") if k == "status" else v
             for k, v in f.items()] for f in facts
        ]  # fmt: skip
        parts += ["<h2>Runs</h2>", _html_table(head, rows, left=len(head))]
        if any(f["status"] != RunStatus.COMPLETE for f in facts):
            parts.append("<p class='warn'>Some runs are <b>partial</b> (interrupted): their "
                         "largest populations may be missing.</p>")  # fmt: skip
    if len(devices) > 1:
        rows = []
        for v in verdicts:
            t, m = v.threaded, v.multiprocess
            rows.append([v.device, ("raw", f"<span class='badge {v.status}'>{v.status}</span>"),
                         v.kernel_release or "?", v.expectation,
                         t.slope_text() if t else "-", m.slope_text() if m else "-",
                         {True: "yes", False: "NO", None: "n/a"}[v.consistent]])  # fmt: skip
        head = ["device", "verdict", "kernel", "version says", "threaded", "multiprocess",
                "consistent"]  # fmt: skip
        parts += ["<h2>Farm: per-device overview</h2>", _html_table(head, rows, left=7)]
        parts += [_figure_html(*f) for f in figs if f[0].startswith("devices_")]
    cls = {Complexity.ON: "on", Complexity.O1: "o1"}
    rows = [r[:-1] + [("raw", f"<span class='{cls.get(r[-1], 'inc')}'>{r[-1]}</span>")]
            for r in _scaling_rows(fits)]  # fmt: skip
    parts += [
        "<h2>Scaling</h2><p>Theil-Sen slope of per-point median latency against the number "
        "of extra processes. O(N): the CI's low slope at least doubles the latency over the "
        f"sweep or is &ge; {analysis.WALK_MIN_SLOPE_NS:g} ns/process; O(1): growth &le; "
        f"{analysis.O1_MAX_GROWTH:.0%}, and the CI excludes both doubling and "
        f"{analysis.WALK_MIN_SLOPE_NS:g} ns/process."
        "</p>",
        _html_table(_SCALING_HEAD, rows, left=3),
        "<h2>Latency summary (µs)</h2>",
    ]
    for (device, mode), table in _wide_summary(analysis.summary(df)).items():
        head = ["population"] + [stat for _, stat in table.columns]
        kinds = [k for k, _ in table.columns]
        groups = [("", 1)] + [(k, kinds.count(k)) for k in dict.fromkeys(kinds)]
        rows = [[p, *r] for p, r in zip(table.index, table.to_numpy().tolist(), strict=True)]
        parts += [f"<h3>{_e(device)} - {_e(mode)} writes</h3>", _html_table(head, rows, 0, groups)]
    parts.append("<h2>Figures</h2>")
    parts += [_figure_html(*f) for f in figs if not f[0].startswith("devices_")]
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "\n".join(parts).encode("utf-8"))  # a CI artifact is never half a file
    return path


def _figure_html(stem: str, caption: str, fig: Figure) -> str:
    data = base64.b64encode(plots.figure_png(fig)).decode("ascii")
    help_text = plots.FIGURE_HELP.get(stem.split("_", 1)[0], "")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
        f"<figcaption><b>{_e(caption)}.</b> {_e(help_text)}</figcaption></figure>"
    )
