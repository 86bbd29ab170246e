"""`droidoom export RUN --perfetto OUT.pftrace` (registered on droidoom.cli.app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import UsageError
from .app import app, console


@app.command()
def export(
    run: Annotated[Path, typer.Argument(help="A run directory.", show_default=False)],
    perfetto: Annotated[
        Path | None,
        typer.Option("--perfetto", help="Write a Perfetto trace (.pftrace) to this file."),
    ] = None,
) -> None:
    """Export a run for other tools. --perfetto writes a trace for ui.perfetto.dev: one
    track per target with a slice per write (named by role; adj, latency, population, CPU
    as args) and a population counter track. Open it next to a system trace of the same
    phone: runs captured with --capture perfetto are placed on the phone's BOOTTIME."""
    if perfetto is None:
        raise UsageError("say what to export: e.g. --perfetto run.pftrace")
    from ..report.export import export_perfetto
    from ..store import check_writable

    check_writable(perfetto, "--perfetto")  # a directory, an unwritable folder
    if not perfetto.parent.is_dir():  # export writes the file, it makes no folders
        raise UsageError(f"--perfetto {perfetto}: cannot write there ({perfetto.parent} does "
                         "not exist); create that folder or choose another path")  # fmt: skip
    counts = export_perfetto(run, perfetto)
    console.print(
        f"wrote {perfetto}: {counts['slices']} write slices on {counts['tracks']} tracks, "
        f"{counts['counters']} counter values ({counts['clock']} clock)"
    )
