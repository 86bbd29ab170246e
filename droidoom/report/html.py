"""The HTML report: one self-contained file (inline CSS, figures as base64 PNG data URIs), so
it can be mailed or archived as a single file and opened offline."""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pandas as pd
from matplotlib.figure import Figure

from .. import analysis, schema, units
from ..fingerprint import describe, fingerprint
from ..schema import KINDS
from ..store import atomic_write
from ..vocab import Complexity, RunStatus
from . import plots
from .rows import (
    STAT_COLS,
    capture_lines,
    report_frames,
    run_facts,
    run_metas,
    scaling_rows,
    with_visits,
)

_SCALING_HEAD = ["device", "mode", "kind", "ns/process", "95% CI", "base µs", "over sweep",
                 "populations", "scaling"]  # fmt: skip
#: An HTML table cell: escaped text, or ("raw", html) inserted as is.
_Cell = str | int | float | tuple[str, str]

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



def _wide_summary(stats: pd.DataFrame) -> dict[tuple[str, str], pd.DataFrame]:
    """Per device x mode: rows = population, columns = (kind, stat) in µs text (HTML)."""
    out = {}
    for (device, mode), g in stats.groupby(["device", "mode"], observed=True, sort=True):
        kinds = [k for k in KINDS if k in set(g["kind"].astype(str))]
        table = pd.DataFrame(index=sorted(g["population"].unique()))
        for kind in kinds:
            k = g[g["kind"].astype(str) == kind].set_index("population")
            for col, label in STAT_COLS:
                table[(kind, label)] = k[col].reindex(table.index).map(units.us)
        errors = g.groupby("population")["errors"].sum().reindex(table.index)
        if errors.any():
            table[("", "errors")] = errors.astype(str)
        out[(str(device), str(mode))] = table
    return out


def _e(x: object) -> str:
    return html.escape(str(x))


def _html_table(
    head: Sequence[str],
    rows: Iterable[Sequence[_Cell]],
    left: int = 0,
    groups: Sequence[tuple[str, int]] = (),
) -> str:
    """A table; the first `left` columns are left-aligned. Cells are escaped unless they are
    tuples ("raw", html). `groups` = [(label, n_columns), ...] adds a spanning header row."""

    def cell(i: int, v: _Cell, tag: str) -> str:
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
    perf: pd.DataFrame | None = None,
) -> Path:
    """Write one self-contained HTML report (inline CSS, figures as data URIs) to `path`.

    Sections: verdict per device, runs, with several devices a side-by-side overview (table
    and figure), scaling fits, latency summary, figures. `figures` defaults to
    `plots.standard_figures(df, logy=logy)` (pass them to reuse figures already drawn).
    """
    metas, path = run_metas(metas), Path(path)
    groups = _fingerprint_groups(df, metas)
    devices = sorted(df["device"].astype(str).unique())
    what, unit = (("lmkd's kill path", "kills") if schema.is_kill(df)
                  else ("oom_score_adj write latency", "writes"))  # fmt: skip
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>droidoom report - {_e(', '.join(devices))}</title><style>{_CSS}</style>",
        f"</head><body><h1>droidoom: {what}</h1>",
        f"<p class='sub'>{units.count(len(df))} timed {unit}, {len(devices)} device(s), "
        f"{df['run_id'].nunique()} run(s); generated "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}</p>",
    ]
    if metas:
        parts += _runs_html(metas)
    if len(groups) > 1:  # unlike runs never pool: a section per group
        parts.append(f"<p class='warn'>These runs measured {len(groups)} different things "
                     "(schedule, captures or kernel differ): each group is reported apart.</p>")
        for label, gdf, mine in groups:
            fp, what = label.split(": ", 1)
            parts.append(f"<h2>Group {_e(fp)}</h2><p class='sub'>{_e(what)}</p>")
            parts += _group_html(gdf, mine, plots.standard_figures(gdf, logy=logy), level=3,
                                 perf=perf)  # fmt: skip
    else:
        figs = (list(figures) if figures is not None else [] if schema.is_kill(df)
                else plots.standard_figures(df, logy=logy))  # fmt: skip
        parts += _group_html(df, metas, figs, level=2, perf=perf)
    parts.append("</body></html>")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, "\n".join(parts).encode("utf-8"))  # a CI artifact is never half a file
    return path


def _fingerprint_groups(
    df: pd.DataFrame, metas: Sequence[Mapping[str, Any]]
) -> list[tuple[str, pd.DataFrame, list[Mapping[str, Any]]]]:
    """(label, rows, run.jsons) per group of runs that may be shown together
    (fingerprint.report_groups); one group of everything when the metas are unknown."""
    if not metas or "run_id" not in df.columns:
        return [("", df, list(metas))]
    out = []
    for rows, idx in report_frames(df, metas):
        mine = [metas[i] for i in idx]
        one = len({m.get("device") for m in mine}) == 1  # else a farm's devices side by side
        out.append((f"{fingerprint(mine[0], target=one)}: {describe(mine[0], target=one)}",
                    rows, mine))  # fmt: skip
    return out


def _group_html(
    df: pd.DataFrame, metas: Sequence[Mapping[str, Any]],
    figs: Sequence[tuple[str, str, Figure]], level: int, perf: pd.DataFrame | None = None,
) -> list[str]:  # fmt: skip
    """Verdict, overview, scaling, summary, the kernel's view (ftrace, perf) and figures of
    runs that may be pooled."""
    h = f"h{level}"
    if schema.is_kill(df):  # rows are kills (--measure kill): their own view
        from .kill_html import kill_html

        return kill_html(df, metas, h)
    fits = analysis.fits(df)
    verdicts = analysis.verdict(df, metas, fitted=fits)
    parts = [f"<{h}>Verdict</{h}>", *map(_verdict_html, verdicts)]
    if df["device"].nunique() > 1:
        parts += _overview_html(verdicts)
        parts += [_figure_html(*f) for f in figs if f[0].startswith("devices_")]
    parts += _scaling_html(fits)
    parts += _summary_html(df)
    if "kernel_ns" in df.columns:
        parts += _kernel_html(df, h)
    ids = set(df["run_id"].astype(str).unique())
    if perf is not None and not (mine := perf[perf["run_id"].astype(str).isin(ids)]).empty:
        parts += _perf_html(mine, h)
    parts.append(f"<{h}>Figures</{h}>")
    parts += [_figure_html(*f) for f in figs if not f[0].startswith("devices_")]
    return parts


def _kernel_html(df: pd.DataFrame, h: str) -> list[str]:
    """ftrace's view per point: matched writes, kernel time, its share of the latency."""
    from ..capture import validation_table

    v = with_visits(validation_table(df)).sort_values(["kind", "population", "point"])
    head = ["kind", "population", "sweep", "matched", "kernel µs", "overhead µs", "kernel share"]
    rows: list[list[_Cell]] = [
        [str(r.kind), str(r.population), str(r.sweep), f"{r.matched_fraction:.1%}",
         units.us(cast(float, r.kernel_median_ns)), units.us(cast(float, r.overhead_median_ns)),
         f"{r.kernel_share:.0%}"] for r in v.itertuples(index=False)
    ]  # fmt: skip
    return [f"<{h}>Kernel view (ftrace): write syscall vs helper clock</{h}>",
            _html_table(head, rows, left=3)]  # fmt: skip


def _perf_html(perf: pd.DataFrame, h: str) -> list[str]:
    """perf's view: each kind's share of samples in __set_oom_adj (the walk)."""
    from ..capture.perf_parse import WALKER, symbol_share

    share = symbol_share(perf).sort_values(["kind", "population"])
    head = ["kind", "population", "mode", "samples", "in it (children)", "its own code"]
    rows: list[list[_Cell]] = [
        [str(r.kind), str(r.population), str(r.mode), str(r.samples), f"{r.children_pct:.0f}%",
         f"{r.self_pct:.0f}%"] for r in share.itertuples(index=False)
    ]  # fmt: skip
    return [f"<{h}>Kernel view (perf): samples in {WALKER}</{h}>",
            _html_table(head, rows, left=3)]  # fmt: skip


def _runs_html(metas: Sequence[Mapping[str, Any]]) -> list[str]:
    """The runs' facts, one row per run, and a warning when some are partial."""
    facts = [run_facts(m) for m in metas]
    head = list(facts[0])
    rows: list[list[_Cell]] = [
        [("raw", f"<span class='{_e(v)}'>{_e(v)}</span>") if k == "status" else v
         for k, v in f.items()] for f in facts
    ]  # fmt: skip
    parts = ["<h2>Runs</h2>", _html_table(head, rows, left=len(head))]
    for text, loud in (c for m in metas for c in capture_lines(m)):
        parts.append(f"<p class='warn'><b>{_e(text)}</b></p>" if loud
                     else f"<p class='sub'>{_e(text)}</p>")  # fmt: skip
    if any(f["status"] != RunStatus.COMPLETE for f in facts):
        parts.append("<p class='warn'>Some runs are <b>partial</b> (interrupted): their "
                     "largest populations may be missing.</p>")  # fmt: skip
    return parts


def _overview_html(verdicts: Sequence[analysis.Verdict]) -> list[str]:
    """A farm's devices side by side: verdict, kernel and both fits' slopes."""
    rows: list[list[_Cell]] = []
    for v in verdicts:
        t, m = v.threaded, v.multiprocess
        rows.append([v.device, ("raw", f"<span class='badge {v.status}'>{v.status}</span>"),
                     v.kernel_release or "?", v.expectation,
                     t.slope_text() if t else "-", m.slope_text() if m else "-",
                     {True: "yes", False: "NO", None: "n/a"}[v.consistent]])  # fmt: skip
    head = ["device", "verdict", "kernel", "version says", "threaded", "multiprocess",
            "consistent"]  # fmt: skip
    return ["<h2>Farm: per-device overview</h2>", _html_table(head, rows, left=7)]


def _scaling_html(fits: Sequence[analysis.Fit]) -> list[str]:
    """The scaling fits' table with how O(1) / O(N) are decided."""
    cls: dict[str, str] = {Complexity.ON: "on", Complexity.O1: "o1"}
    rows: list[list[_Cell]] = [
        [*r[:-1], ("raw", f"<span class='{cls.get(r[-1], 'inc')}'>{r[-1]}</span>")]
        for r in scaling_rows(fits)
    ]
    return [
        "<h2>Scaling</h2><p>Theil-Sen slope of per-point median latency against the number "
        "of extra processes. O(N): the CI's low slope at least doubles the latency over the "
        f"sweep or is &ge; {analysis.WALK_MIN_SLOPE_NS:g} ns/process; O(1): growth &le; "
        f"{analysis.O1_MAX_GROWTH:.0%}, and the CI excludes both doubling and "
        f"{analysis.WALK_MIN_SLOPE_NS:g} ns/process."
        "</p>",
        _html_table(_SCALING_HEAD, rows, left=3),
    ]


def _summary_html(df: pd.DataFrame) -> list[str]:
    """Latency statistics (µs) per device x mode: populations down, kind x stat across."""
    parts = ["<h2>Latency summary (µs)</h2>"]
    for (device, mode), table in _wide_summary(analysis.summary(df)).items():
        columns = cast(list[tuple[str, str]], table.columns.tolist())  # (kind, stat)
        head = ["population"] + [stat for _, stat in columns]
        kinds = [k for k, _ in columns]
        groups = [("", 1)] + [(k, kinds.count(k)) for k in dict.fromkeys(kinds)]
        rows: list[list[_Cell]] = [
            [p, *r] for p, r in zip(table.index, table.to_numpy().tolist(), strict=True)
        ]
        parts += [f"<h3>{_e(device)} - {_e(mode)} writes</h3>", _html_table(head, rows, 0, groups)]
    return parts


def _figure_html(stem: str, caption: str, fig: Figure) -> str:
    data = base64.b64encode(plots.figure_png(fig)).decode("ascii")
    help_text = plots.FIGURE_HELP.get(stem.split("_", 1)[0], "")
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
        f"<figcaption><b>{_e(caption)}.</b> {_e(help_text)}</figcaption></figure>"
    )
