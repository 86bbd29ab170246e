"""CLI commands for stored runs: `droidoom report` and `droidoom compare` (on droidoom.cli.app).

`compare` is made for kernel CI: exit 0 when every point is SAME, 1 on a regression, 3 when a
point is UNKNOWN (more blocks needed, a disturbed or cut-short run), 2 on bad
input (missing runs, runs that cannot be compared) - the last through DataError/UsageError,
which `droidoom.cli.main` turns into one red line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import DataError, UsageError
from ..units import slope as ns
from .app import app, console, err_console

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    from ..analysis import Comparison
    from ..store import RunInfo

Runs = Annotated[
    list[Path],
    typer.Argument(
        help="Run directories, or folders of runs (e.g. a farm directory).", show_default=False
    ),
]
CompleteOnly = Annotated[
    bool, typer.Option("--complete-only", help="Skip interrupted (partial) runs.")
]

# Spec fields that change what one write costs: runs that differ in one of them measure
# different things, and a ratio between them says nothing about the kernel.
_SPEC_MUST_MATCH = ("scenario", "levels", "threads", "target_threads", "rate")


def _load(
    paths: list[Path], complete_only: bool, what: str = ""
) -> tuple[pd.DataFrame, list[RunInfo]]:
    """(samples, RunInfos) of `paths`; notes on partial runs; DataError when nothing loads."""
    from .. import store

    label = f"{what} " if what else ""
    runs = store.find_runs(paths)
    if any(r.meta.get("status") == "running" for r in runs):  # a killed --kernel run?
        from ..run.streamed import settle_all

        runs = settle_all(runs)
    partial = [r for r in runs if r.status != "complete"]
    if complete_only:
        runs = [r for r in runs if r.status == "complete"]
        if not runs:
            raise DataError(f"{label}{', '.join(map(str, paths))}: every run is partial; "
                            "drop --complete-only to use them")  # fmt: skip
    from ..targets.select import recover_hint

    for r in partial:
        verb = "skipped" if complete_only else "its missing points are left out"
        if hint := recover_hint(r.meta, r.path):  # the target may still hold its records
            verb += f"; `{hint}` fetches what is left of it"
        err_console.print(f"[yellow]note:[/] {label}run {r.path} is {r.status}: {verb}")
    df = store.load(paths, include_partial=not complete_only)  # skips corrupt runs in a folder
    if df.empty:
        hints = [h for r in partial if (h := recover_hint(r.meta, r.path))]
        raise DataError(f"{label}{', '.join(map(str, paths))}: the runs hold no samples "
                        "(cut short before the first records were saved)"
                        + (f"; bring them home with `{hints[0]}`" if hints else ""))  # fmt: skip
    loaded = set(df["run_id"].astype(str).unique())
    return df, [r for r in runs if r.run_id in loaded]


def _groups(df: pd.DataFrame, runs: list[RunInfo]) -> list[tuple[pd.DataFrame, list[RunInfo]]]:
    """Runs split into groups that measured alike (droidoom/fingerprint.py): only runs
    of one group are pooled, a farm's devices side by side within it."""
    from ..report.rows import report_frames

    return [(g, [runs[i] for i in idx]) for g, idx in report_frames(df, [r.meta for r in runs])]


@app.command()
def report(
    runs: Runs,
    html: Annotated[
        Path | None,
        typer.Option("--html", help="Also write one self-contained HTML file (figures inside)."),
    ] = None,
    figures: Annotated[
        Path | None, typer.Option("--figures", help="Write the PNG figures into this directory.")
    ] = None,
    logy: Annotated[
        bool, typer.Option("--logy", help="Log latency axis on scaling plots.")
    ] = False,
    complete_only: CompleteOnly = False,
) -> None:
    """Tables, verdict and figures for stored runs; several devices are compared side by side.

    Prints latency (n, median, p90, p99 per kind and population), the O(1)/O(N) scaling fit
    and the fixed/regressed verdict per device. --figures writes PNGs (scaling with the fit
    and its CI, latency distributions, devices side by side); --html writes all of it in one
    file that opens offline (mail it, or keep it as a CI artifact).
    """
    from rich.markup import escape

    from ..fingerprint import describe, fingerprint
    from ..report import plots
    from ..report import terminal as rep
    from ..store import check_writable, read_tables

    if html is not None:  # checked before the work, not after it
        check_writable(html, "--html")
    if figures is not None:
        check_writable(figures, "--figures", directory=True)
    df, infos = _load(runs, complete_only)
    groups = _groups(df, infos)
    perf = read_tables(infos, "perf_symbols")  # --capture perf: the walk's share
    if len(groups) > 1:
        err_console.print(
            f"[yellow]note:[/] these runs measured {len(groups)} different things (schedule, "
            "captures or kernel differ): each group is reported apart, runs pool only within "
            "their group"
        )
    for gdf, ginfos in groups:
        if len(groups) > 1:
            names = ", ".join(r.run_id for r in ginfos)
            one = len({r.device for r in ginfos}) == 1  # else a farm's devices, side by side
            fp = fingerprint(ginfos[0].meta, target=one)
            console.rule(f"[bold]group {fp}[/]", align="left")
            what = describe(ginfos[0].meta, target=one)
            console.print(escape(f"{what}; runs: {names}"), highlight=False)
        ids = {r.run_id for r in ginfos}
        gperf = perf[perf["run_id"].isin(ids)] if perf is not None else None
        rep.render_terminal(gdf, [r.meta for r in ginfos], console, perf=gperf)
    metas = [r.meta for r in infos]
    figs = plots.standard_figures(df, logy=logy) if figures or html else None
    if figures is not None:
        for p in plots.save_figures(df, figures, figures=figs):
            console.print(f"figure: {p}", soft_wrap=True)  # paths unbroken, for copy & paste
    if html is not None:
        path = rep.render_html(df, metas, html, figures=figs, perf=perf)
        console.print(f"html report: {path}", soft_wrap=True)


def _load_sides(
    base: list[Path], new: list[Path], complete_only: bool, ignore_spec: bool
) -> tuple[tuple[pd.DataFrame, list[RunInfo]], tuple[pd.DataFrame, list[RunInfo]]]:
    """BASE's and NEW's samples and runs (each side: one or more runs or folders, pooled);
    DataError when they measured different things (unless `ignore_spec`), or when one
    side's runs did (runs pool only when their fingerprints match)."""
    b, n = _load(base, complete_only, "BASE"), _load(new, complete_only, "NEW")
    diffs = _spec_differences(b[1], n[1])
    if diffs and not ignore_spec:
        raise DataError("BASE and NEW measured different things (" + "; ".join(diffs) + "): "
                        "profile both with the same options, or pass --ignore-spec")  # fmt: skip
    for side, (_, runs) in (("BASE", b), ("NEW", n)):
        _one_fingerprint(side, runs, ignore_spec)
    return b, n


def _one_fingerprint(side: str, runs: list[RunInfo], ignore_spec: bool) -> None:
    """DataError when the runs pooled on one side measured different things (another
    schedule or capture, or on one device another kernel: droidoom/fingerprint.py). A farm
    folder's devices are compared device by device, so they may differ in their target."""
    from ..fingerprint import describe, fingerprint

    prints: dict[str, list[RunInfo]] = {}
    for r in runs:
        prints.setdefault(fingerprint(r.meta, target=False), []).append(r)
    if len(prints) == 1:  # one schedule: within each device, one kernel
        prints = {}
        for r in runs:
            prints.setdefault(fingerprint(r.meta), []).append(r)
        if len(prints) == len({r.device for r in runs}):
            return
    if len(prints) > 1 and not ignore_spec:
        what = "; ".join(f"{describe(rs[0].meta)} ({', '.join(r.run_id for r in rs[:3])}"
                         f"{'...' if len(rs) > 3 else ''})" for rs in prints.values())  # fmt: skip
        raise DataError(f"the {side} runs measured different things, so they cannot pool: "
                        f"{what}; pass runs of one kind per side, or --ignore-spec")  # fmt: skip


def _disturbed(runs: list[RunInfo]) -> dict[str, str]:
    """run_id -> what disturbed it: run.json notices that say "disturbed:" (another job,
    a moving process count, a high load), else the same facts read from its
    device_activity (runs saved before those notices)."""
    from ..analysis.drift import disturbances

    out = {}
    for r in runs:
        said = [str(n)[len("disturbed:"):].strip() for n in r.meta.get("notices") or ()
                if str(n).startswith("disturbed:")]  # fmt: skip
        if said or (said := disturbances(r.meta)):
            out[r.run_id] = "; ".join(said)
    return out


def _spec_differences(base: list[RunInfo], new: list[RunInfo]) -> list[str]:
    """Measurement-changing spec fields whose values differ between the two sides."""

    def values(runs: list[RunInfo], key: str) -> set[str]:
        return {repr((r.meta.get("spec") or {}).get(key)) for r in runs}

    out = []
    for key in _SPEC_MUST_MATCH:
        b, n = values(base, key), values(new, key)
        if b != n:
            out.append(f"{key}: base {', '.join(sorted(b))} vs new {', '.join(sorted(n))}")
    return out


def _sides(
    positional: list[Path] | None, base: list[Path] | None, new: list[Path] | None
) -> tuple[list[Path], list[Path]]:
    """BASE and NEW paths from `compare BASE NEW` or `compare --base B.. --new N..`."""
    pos = positional or []
    if base or new:
        if pos or not base or not new:
            raise UsageError("give BASE and NEW either as two arguments (`compare BASE NEW`) "
                             "or as options (`compare --base B1 --base B2 --new N1 --new N2`), "
                             "not both and not one side only")  # fmt: skip
        return base, new
    if len(pos) != 2:
        raise UsageError(f"compare takes BASE and NEW (got {len(pos)} path(s)); for several "
                         "runs per side repeat --base and --new, or pass a folder of runs "
                         "per side")  # fmt: skip
    return [pos[0]], [pos[1]]


@app.command()
def compare(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(help="BASE (baseline run, or folder of runs) and NEW (the run to check "
                       "against it).", show_default=False),
    ] = None,
    base_runs: Annotated[
        list[Path] | None,
        typer.Option("--base", help="A BASE run or folder; repeat to pool several runs.",
                     show_default=False),
    ] = None,
    new_runs: Annotated[
        list[Path] | None,
        typer.Option("--new", help="A NEW run or folder; repeat to pool several runs.",
                     show_default=False),
    ] = None,
    max_ratio: Annotated[
        float,
        typer.Option(
            help="The change that matters: DIFFERENT needs new/base beyond it (1.10 = +10%), "
            "SAME needs the runs to be able to see it."
        ),
    ] = 1.10,
    pair: Annotated[
        bool,
        typer.Option(
            "--pair", help="Compare two different devices (one per side) with each other."
        ),
    ] = False,
    pooled: Annotated[
        bool, typer.Option("--pooled", help="One row per kind (all populations together).")
    ] = False,
    csv: Annotated[Path | None, typer.Option("--csv", help="Also write the table as CSV.")] = None,
    ignore_spec: Annotated[
        bool, typer.Option("--ignore-spec", help="Compare even when the runs' specs differ.")
    ] = False,
    judge_disturbed: Annotated[
        bool,
        typer.Option("--judge-disturbed", help="Judge points of runs that say 'disturbed' "
                     "too (default: UNKNOWN)."),
    ] = False,
    complete_only: CompleteOnly = False,
) -> None:
    """Did NEW get slower than BASE? Per kind x population: SAME, DIFFERENT or UNKNOWN.

    Each block of consecutive writes of a kind is one observation (its median). A point is
    DIFFERENT when the smaller p of a Kolmogorov-Smirnov and a Mann-Whitney U test over
    the two sides' blocks is <= 0.01 and new/base lies beyond --max-ratio; SAME when the
    runs had the power to see a change of --max-ratio (the minimum detectable effect, MDE,
    is within it); else UNKNOWN: more blocks are needed (more --writes, or several runs per
    side: `profile --repeat N`, then `compare --base DIR --new DIR`). Each kind is taken
    relative to the same point's `single` writes of its run (which no kernel change
    touches), so a busier machine on one day does not look like a regression. The scaling
    slopes (ns per extra process) are compared too: a kind that starts to walk every
    process (threaded writes on a pre-fix kernel) is named. Exit status: 0 every point
    SAME, 1 a regression (DIFFERENT and slower, or a slope), 2 bad input (missing runs,
    different specs), 3 UNKNOWN and no regression: points too noisy or with too few
    blocks, runs disturbed by other work, BASE points missing in NEW or with too few
    writes (a run cut short).
    """
    from .. import analysis
    from ..report import terminal as rep

    base, new = _sides(runs, base_runs, new_runs)
    if not max_ratio > 1:
        raise UsageError(f"--max-ratio must be > 1 (e.g. 1.10 for +10%), got {max_ratio}")
    if csv is not None:
        from ..store import check_writable

        check_writable(csv, "--csv")
    (bdf, binfo), (ndf, ninfo) = _load_sides(base, new, complete_only, ignore_spec)
    by = ("device", "kind", "mode") if pooled else analysis.GROUP_KEYS
    pair = pair or _two_vm_builds(binfo, ninfo)
    disturbed = {} if judge_disturbed else _disturbed(binfo + ninfo)
    for run_id, what in disturbed.items():
        err_console.print(f"[yellow]note:[/] run {run_id} was disturbed ({what}): its points "
                          "are UNKNOWN (--judge-disturbed judges them anyway)")  # fmt: skip
    result = analysis.compare(bdf, ndf, max_ratio, by=by, pair_devices=pair,
                              disturbed=set(disturbed))  # fmt: skip
    unknown = _unmeasured(analysis.summary(bdf, by=by), result, by)
    rep.compare_table(result, console, whole=not unknown)
    _slopes(result)
    if csv is not None:
        from ..store import atomic_write

        atomic_write(csv, result.table.to_csv(index=False).encode(), "--csv")
    if result.has_regression:
        raise typer.Exit(1)
    if unknown:
        err_console.print("[bold yellow]UNKNOWN[/]: no regression among the points compared, "
                          f"but {'; '.join(unknown)}")  # fmt: skip
        raise typer.Exit(EXIT_UNKNOWN)


#: `compare`'s exit status when it cannot say "no regression": points missing or too thin.
EXIT_UNKNOWN = 3


def _unmeasured(base_groups: pd.DataFrame, result: Comparison, by: Sequence[str]) -> list[str]:
    """What `compare` could not judge, each with what to do: BASE points NEW lacks (a
    cut-short run), points with too few writes on a side, points of disturbed runs, and
    points too noisy or with too few blocks for the threshold. Empty when every BASE point
    was judged SAME or DIFFERENT."""
    from ..analysis import MIN_COMPARED_WRITES

    keys = [k for k in ("kind", "population") if k in by]
    out = []

    def names(rows: list[dict[Any, Any]]) -> str:
        more = "..." if len(rows) > 6 else ""
        return ", ".join(" ".join(str(r[k]) for k in keys) for r in rows[:6]) + more

    seen = {tuple(str(r[k]) for k in keys) for r in result.table.to_dict("records")}
    lacking = [r for r in base_groups.to_dict("records")
               if r["count"] > 0 and tuple(str(r[k]) for k in keys) not in seen]  # fmt: skip
    if lacking:
        out.append(f"{len(lacking)} BASE point(s) are missing in NEW ({names(lacking)}); "
                   "re-run the cut-short side to know")  # fmt: skip
    why = result.unknown["why"] if len(result.unknown) else None
    advice = {
        "too few writes": f"have fewer than {MIN_COMPARED_WRITES} writes on a side (re-run the "
        "cut-short side to know)",
        "disturbed": "come from a run disturbed by other work (re-run it quiet)",
        "too few blocks": "have too few blocks to judge (more --writes, or more runs per side: "
        "profile --repeat N)",
        "too noisy": "vary too much from block to block to see a change of "
        f"x{result.max_ratio:.2f} (more --writes or more runs per side, a quieter target, or a "
        "larger --max-ratio)",
    }
    for reason, text in advice.items():
        if why is not None and (rows := result.unknown[why == reason].to_dict("records")):
            out.append(f"{len(rows)} point(s) {text}: {names(rows)}")
    return out


def _two_vm_builds(binfo: list[RunInfo], ninfo: list[RunInfo]) -> bool:
    """Both sides are one kernel image booted alike (`profile --kernel`), under different
    names: builds to compare with each other (as --pair does)."""
    bdev, ndev = ({r.device for r in infos} for infos in (binfo, ninfo))
    from ..targets.select import recorded_in_vm

    vms = all(recorded_in_vm(r.meta) for r in binfo + ninfo)
    if vms and len(bdev) == len(ndev) == 1 and bdev != ndev:
        err_console.print(f"[dim]comparing {bdev.pop()} (BASE) with {ndev.pop()} (NEW)[/]")
        return True
    return False


def _slopes(result: Comparison) -> None:
    """Print the ns/process of both sides and name kinds whose slope regressed."""
    from rich import box
    from rich.table import Table

    sl = result.slopes
    if sl is None or sl.empty:
        _name_regressions(result, set())
        return

    where = ", ".join(sorted(set(sl["device"].astype(str)) | set(sl["mode"].astype(str))))
    t = Table(title=f"ns per extra process - {where}", title_justify="left",
              box=box.SIMPLE_HEAD)  # fmt: skip
    for h in ("kind", "base", "new", "new - base", "95% CI", ""):
        t.add_column(h, justify="left" if h == "kind" else "right", no_wrap=True)
    for r in sl.to_dict("records"):
        flag = "[bold red]REGRESSION[/]" if r["regression"] else ""
        t.add_row(str(r["kind"]), ns(r["base_slope_ns"]), ns(r["new_slope_ns"]),
                  ns(r["diff_ns"]), f"{ns(r['diff_low'])}..{ns(r['diff_high'])}", flag)  # fmt: skip
    console.print(t)
    _name_regressions(result, set(result.slope_regressions["kind"].astype(str)) if len(
        result.slope_regressions) else set())
    for r in result.slope_regressions.to_dict("records"):
        what = "threaded writes (every multi-threaded app)" if r["kind"] == "threaded" else (
            f"{r['kind']} writes")
        console.print(
            f"[bold red]regression:[/] {what} now cost {ns(r['new_slope_ns'])} ns per extra "
            f"process (base {ns(r['base_slope_ns'])}): NEW walks every process in "
            "__set_oom_adj where BASE did not"
        )


def _name_regressions(result: Comparison, named: set[str]) -> None:
    """One line per kind whose latency (relative to single) regressed, unless its slope
    line already names it."""
    reg = result.regressions
    if "kind" not in reg.columns or "population" not in reg.columns:
        return
    for kind in dict.fromkeys(reg["kind"].astype(str)):
        if kind not in named:
            rows = reg[reg["kind"].astype(str) == kind]
            pops = ", ".join(map(str, rows["population"]))
            console.print(f"[bold red]regression:[/] {kind} writes at populations {pops} "
                          f"(x{rows['ratio'].max():.1f}{_basis_words(rows)})")  # fmt: skip


def _basis_words(rows: pd.DataFrame) -> str:
    """' relative to single writes' when the ratios are (runs with the control), else ''."""
    from ..analysis import CONTROL_KIND

    relative = "basis" in rows.columns and bool((rows["basis"] != "raw").all())
    return f" relative to {CONTROL_KIND} writes" if relative else ""
