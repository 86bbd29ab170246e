"""The kernel lab: boot a kernel image in QEMU and profile it (droidoom.targets.vm), and build
the reference kernel pair "fixed" / "regressed" from a pinned Debian source (droidoom.lab.build).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR = Path(__file__).parent


def cache_dir() -> Path:
    """droidoom's lab cache: $XDG_CACHE_HOME/droidoom/lab (default ~/.cache/droidoom/lab)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "droidoom" / "lab"
