"""The Typer app every command registers on, the two consoles, and the entry point."""

from __future__ import annotations

import inspect
import sys
import warnings

import typer
from rich.console import Console
from rich.markup import escape

from .. import signals
from ..errors import DroidoomError

app = typer.Typer(
    help=(
        "Measure what an oom_score_adj update costs: on the phone on your desk, a farm of "
        "phones, or this Linux host. Start with `droidoom profile --quick`."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # plain click help: Typer's rich help imports markdown-it, pygments and attrs (~0.3 s
    # of every `--help`, twice the rest of the start-up)
    rich_markup_mode=None,
)
console = Console()
err_console = Console(stderr=True)


@app.callback(epilog="`droidoom --version` prints the version.")
def _root() -> None:
    """Measure what an oom_score_adj update costs (see `droidoom COMMAND --help`).

    No options here: Typer converts every option's value, even a default, through pydantic
    (~0.2 s to import), so a root `--version` option would slow every `COMMAND --help`;
    droidoom.cli.main answers `--version` itself."""


def _show_warning(
    message: Warning | str, category: type[Warning], *_args: object, **_kw: object
) -> None:
    """Warnings (a skipped corrupt run, a cleanup that failed) as one yellow line."""
    err_console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False)


def _reflow(text: str) -> str:
    """A docstring's paragraphs as single lines, so help reflows to the terminal (each
    source line break was kept: ragged at 80 columns). Indented lines stay as they are."""
    paras = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith(" ") or "\n " in p else " ".join(p.split("\n"))
                       for p in paras)  # fmt: skip


def _reflow_help(typer_app: typer.Typer) -> None:
    """Set every command's help to its reflowed docstring (markdown mode would too, but
    importing markdown-it costs each `--help` ~0.1 s)."""
    for cmd in typer_app.registered_commands:
        if cmd.help is None and cmd.callback is not None and cmd.callback.__doc__:
            cmd.help = _reflow(cmd.callback.__doc__)
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _reflow_help(group.typer_instance)


def main() -> None:
    """Console entry point: DroidoomErrors become one red line and an exit code."""
    _reflow_help(app)
    signals.install()  # SIGTERM/SIGHUP save the partial run like Ctrl-C
    warnings.showwarning = _show_warning
    try:
        rv = app(standalone_mode=False)
        if rv == 130:  # Typer's code for a KeyboardInterrupt, SIGTERM/SIGHUP included
            stop = signals.last or KeyboardInterrupt()
            err_console.print(f"[yellow]{signals.describe(stop)}[/]: partial results, if any, "
                              "were saved")  # fmt: skip
            sys.exit(signals.exit_code(stop))
        sys.exit(rv if isinstance(rv, int) else 0)  # typer.Exit(n) is returned, not raised
    except DroidoomError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}")  # "[[devices]]" is not markup
        sys.exit(e.exit_code)
    except KeyboardInterrupt as e:
        err_console.print("[yellow]interrupted[/]: partial results, if any, were saved")
        sys.exit(signals.exit_code(e))
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:
        # Click's usage errors arrive here in non-standalone mode (typer vendors click,
        # so match by behaviour rather than class).
        show = getattr(e, "show", None)
        if callable(show) and hasattr(e, "exit_code"):
            show()
            sys.exit(e.exit_code)
        if type(e).__name__ == "Abort":
            sys.exit(130)
        raise
