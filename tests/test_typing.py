"""The package stays `mypy --strict` clean: a type regression fails the suite, not only CI's
separate `python3 -m mypy` step. The configuration (strict, files) is pyproject's [tool.mypy]."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(importlib.util.find_spec("mypy") is None, reason="mypy is not installed")
def test_package_is_mypy_strict_clean() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "mypy"],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert p.returncode == 0, (p.stdout[-6000:] + p.stderr[-2000:]) or f"exit {p.returncode}"
    assert "Success: no issues found" in p.stdout, p.stdout
