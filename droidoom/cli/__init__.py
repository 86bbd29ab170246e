"""droidoom command line. Thin: parse options, build a spec, delegate, print.

`app` (droidoom/cli/app.py) is the Typer app; each sub-command module registers its
commands on it when imported, in the order `droidoom --help` lists them. Entry point:
`droidoom.cli:main`.
"""

try:
    from . import profile  # noqa: I001, F401  (first: `droidoom --help` lists it first)
    from . import adb, analysis, cost, export, farm, lab  # noqa: F401
    from .app import app, main
except KeyboardInterrupt as e:  # Ctrl-C while the commands load (~1 s): nothing ran yet
    import sys

    sys.stderr.write("interrupted\n")
    raise SystemExit(130) from e  # the shell's code for Ctrl-C, not a traceback

__all__ = ["app", "main"]
