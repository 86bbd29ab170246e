"""droidoom command line. Thin: parse options, build a spec, delegate, print.

`app` (droidoom/cli/app.py) is the Typer app; each sub-command module registers its
commands on it when imported, in the order `droidoom --help` lists them. Entry point:
`droidoom.cli:main`.
"""

from . import profile  # noqa: I001, F401  (first: `droidoom --help` lists it first)
from . import adb, analysis, cost, export, farm, lab  # noqa: F401
from .app import app, main

__all__ = ["app", "main"]
