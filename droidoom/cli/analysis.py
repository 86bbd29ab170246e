"""CLI commands for stored runs: `droidoom report` and `droidoom compare` (on droidoom.cli.app).

`compare` is made for kernel CI: exit 0 when no group regressed, 1 on a regression, 2 on bad
input (missing runs, runs that cannot be compared) - the last through DataError/UsageError,
which `droidoom.cli.main` turns into one red line and exit code 2.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..errors import DataError, UsageError
from ..units import slope as ns
from .app import app, console, err_console

if TYPE_CHECKING:
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
    partial = [r for r in runs if r.status != "complete"]
    if complete_only:
        runs = [r for r in runs if r.status == "complete"]
        if not runs:
            raise DataError(f"{label}{', '.join(map(str, paths))}: every run is partial; "
                            "drop --complete-only to use them")  # fmt: skip
    for r in partial:
        verb = "skipped" if complete_only else "its missing points are left out"
        if (r.meta.get("target") or {}).get("transport") == "adb":  # the phone kept records
            verb += f"; `droidoom recover {r.path}` fetches what the device still holds"
        err_console.print(f"[yellow]note:[/] {label}run {r.path} is {r.status}: {verb}")
    df = store.load(paths, include_partial=not complete_only)  # skips corrupt runs in a folder
    if df.empty:
        raise DataError(f"{label}{', '.join(map(str, paths))}: the runs hold no samples "
                        "(cut short before the first records were saved; a phone keeps "
                        "them: `droidoom recover RUN_DIR`)")  # fmt: skip
    loaded = set(df["run_id"].astype(str).unique())
    return df, [r for r in runs if r.run_id in loaded]


def _mixed_kernels(runs: list[RunInfo]) -> None:
    """A device profiled on two kernels and reported as one would mix both in one fit."""
    seen: dict[str, set[str]] = {}
    for r in runs:
        seen.setdefault(r.device, set()).add(
            str((r.meta.get("target") or {}).get("kernel_release"))
        )
    for device, releases in seen.items():
        if len(releases) > 1:
            err_console.print(
                f"[yellow]note:[/] {device} has runs on kernels {', '.join(sorted(releases))}: "
                "they are pooled here; `droidoom compare BASE NEW` compares builds"
            )


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
    from .. import plots
    from .. import report as rep
    from ..store import check_writable

    if html is not None:  # checked before the work, not after it
        check_writable(html, "--html")
    if figures is not None:
        check_writable(figures, "--figures", directory=True)
    df, infos = _load(runs, complete_only)
    _mixed_kernels(infos)
    metas = [r.meta for r in infos]
    rep.render_terminal(df, metas, console)
    figs = plots.standard_figures(df, logy=logy) if figures or html else None
    if figures is not None:
        for p in plots.save_figures(df, figures, figures=figs):
            console.print(f"figure: {p}", soft_wrap=True)  # paths unbroken, for copy & paste
    if html is not None:
        path = rep.render_html(df, metas, html, figures=figs)
        console.print(f"html report: {path}", soft_wrap=True)


def _load_pair(
    base: Path, new: Path, complete_only: bool, ignore_spec: bool
) -> tuple[tuple[pd.DataFrame, list[RunInfo]], tuple[pd.DataFrame, list[RunInfo]]]:
    """BASE's and NEW's samples and runs; DataError when they measured different things
    (unless `ignore_spec`)."""
    b, n = _load([base], complete_only, "BASE"), _load([new], complete_only, "NEW")
    diffs = _spec_differences(b[1], n[1])
    if diffs and not ignore_spec:
        raise DataError("BASE and NEW measured different things (" + "; ".join(diffs) + "): "
                        "profile both with the same options, or pass --ignore-spec")  # fmt: skip
    return b, n


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


@app.command()
def compare(
    base: Annotated[
        Path, typer.Argument(help="Baseline run (or folder of runs).", show_default=False)
    ],
    new: Annotated[Path, typer.Argument(help="Run to check against it.", show_default=False)],
    max_ratio: Annotated[
        float,
        typer.Option(
            help="Regression when the CI of new/base median lies above this (1.10 = +10%)."
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
    complete_only: CompleteOnly = False,
) -> None:
    """Did NEW get slower than BASE? Latency per kind x population and ns/process (kernel CI).

    Each kind's median is taken relative to the same run's `single` writes (which no kernel
    change touches), so a busier machine on one day does not look like a regression; the
    CIs are widened by a stated between-run floor (analysis.RELATIVE_FLOOR / RAW_FLOOR).
    The scaling slopes (ns per extra process) are compared too: a kind that starts to walk
    every process (threaded writes on a pre-fix kernel) is named. Exit status: 0 no
    regression, 1 at least one regression, 2 bad input (missing runs, different specs).
    """
    from .. import analysis
    from .. import report as rep

    if not max_ratio > 1:
        raise UsageError(f"--max-ratio must be > 1 (e.g. 1.10 for +10%), got {max_ratio}")
    if csv is not None:
        from ..store import check_writable

        check_writable(csv, "--csv")
    (bdf, binfo), (ndf, ninfo) = _load_pair(base, new, complete_only, ignore_spec)
    by = ("device", "kind", "mode") if pooled else analysis.GROUP_KEYS
    pair = pair or _two_vm_builds(binfo, ninfo)
    result = analysis.compare(bdf, ndf, max_ratio, by=by, pair_devices=pair)
    missing = len(analysis.summary(bdf, by=by)) - len(result.table)
    if missing > 0:
        err_console.print(f"[yellow]note:[/] {missing} BASE group(s) have no counterpart in NEW "
                          "and are not compared")  # fmt: skip
    rep.compare_table(result, console)
    _slopes(result)
    if csv is not None:
        from ..store import atomic_write

        atomic_write(csv, result.table.to_csv(index=False).encode(), "--csv")
    if result.has_regression:
        raise typer.Exit(1)


def _two_vm_builds(binfo: list[RunInfo], ninfo: list[RunInfo]) -> bool:
    """Both sides are one kernel image booted alike (`profile --kernel`), under different
    names: builds to compare with each other (as --pair does)."""
    bdev, ndev = ({r.device for r in infos} for infos in (binfo, ninfo))
    vms = all((r.meta.get("target") or {}).get("transport") == "qemu" for r in binfo + ninfo)
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
                          f"(x{rows['ratio'].max():.1f} relative to single writes)")  # fmt: skip
