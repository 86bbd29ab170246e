"""droidoom: measure what an oom_score_adj update costs on Android phones and Linux hosts.

Library entry points for notebooks and scripts::

    import droidoom
    df = droidoom.load("runs/")          # one typed DataFrame across run directories
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pandas loads only when `load` is called
    from collections.abc import Iterable
    from pathlib import Path

    import pandas as pd

__version__ = "0.1.0"

__all__ = ["__version__", "load"]


def load(
    paths: str | Path | Iterable[str | Path],
    *,
    columns: list[str] | None = None,
    include_partial: bool = True,
) -> pd.DataFrame:
    """Load one or many run directories (or folders of runs) into one samples DataFrame.

    See `droidoom.store.load` for details.
    """
    from .store import load as _load

    return _load(paths, columns=columns, include_partial=include_partial)
