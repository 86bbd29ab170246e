"""droidoom command line. Thin: parse options, build a spec, delegate, print.

`app` (droidoom/cli/app.py) is the Typer app; each sub-command module registers its
commands on it when imported, in the order `droidoom --help` lists them. Entry point:
`droidoom.cli:main`.
"""

from __future__ import annotations

import sys

try:
    from . import profile  # noqa: I001, F401  (first: `droidoom --help` lists it first)
    from . import adb, analysis, cost, export, farm, lab  # noqa: F401
    from .app import app
    from .app import main as _run
except KeyboardInterrupt as e:  # Ctrl-C while the commands load: nothing ran yet
    sys.stderr.write("interrupted\n")
    raise SystemExit(130) from e  # the shell's code for Ctrl-C, not a traceback

__all__ = ["app", "main"]


def main() -> None:
    """Console entry point (droidoom.cli.app.main); `--version` answers before Typer builds
    every command's options (most of a start-up's time)."""
    if sys.argv[1:2] == ["--version"]:
        from .. import __version__

        print(f"droidoom {__version__}")
        return
    _run()
