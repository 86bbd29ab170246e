"""The one live progress display: a row per run (label, bar, writes, state, elapsed, ETA)."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from .app import err_console

if TYPE_CHECKING:
    from ..run.session import Progress as RunnerProgress


class LiveProgress:
    """runner.Progress callbacks drawn as rich progress rows on stderr, one per label.

    Use as a context manager around the runs; the rows vanish when it closes. `compact`
    shows the ETA as MM:SS (narrow rows for a farm) instead of H:MM:SS.
    """

    def __init__(self, labels: Iterable[str], state: str = "waiting", compact: bool = True):
        self.rich = Progress(
            TextColumn("[bold]{task.fields[label]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[state]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(compact=compact),
            console=err_console,
            transient=True,
        )
        self.rows = {
            label: self.rich.add_task(label, total=None, label=escape(label), state=state)
            for label in labels
        }

    def __enter__(self) -> LiveProgress:
        self.rich.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.rich.__exit__(exc_type, exc, tb)

    def callbacks(self, label: str, notice_prefix: str | None = None) -> RunnerProgress:
        """runner.Progress for the run of `label`; its notices print as "PREFIX: text"
        (default: the label)."""
        from ..run.runner import Progress as RunnerProgress

        row = self.rows[label]
        prefix = escape(label) if notice_prefix is None else notice_prefix

        def start(total: int) -> None:
            self.rich.update(row, total=total, completed=0, state="writes")

        def point(idx: int, population: int) -> None:
            self.rich.update(row, state=f"writes · {population} procs")

        return RunnerProgress(
            start=start,
            advance=lambda done: self.rich.update(row, completed=done),
            point=point,
            notice=lambda text: self.rich.console.print(f"[yellow]{prefix}:[/] {escape(text)}"),
        )

    def state(self, label: str, text: str) -> None:
        """Show `text` (cut to 70 characters) in the state column of `label`'s row."""
        style = "green" if text == "complete" else "red" if text.startswith("failed") else ""
        short = escape(text if len(text) <= 70 else text[:67] + "...")
        self.rich.update(self.rows[label], state=f"[{style}]{short}[/]" if style else short)

    def notice(self, text: str) -> None:
        """A message above the rows."""
        self.rich.console.print(f"[yellow]{escape(text)}[/]")
