"""Locating the prebuilt native helper per ABI (built by device_scripts/build_helpers.py)."""

from __future__ import annotations

import hashlib
import platform
from functools import cache
from pathlib import Path

from .errors import PermanentTargetError

BIN_DIR = Path(__file__).parent / "bin"

#: Android ABI names we ship, and the `uname -m` values that map to them.
ABIS: tuple[str, ...] = ("arm64-v8a", "armeabi-v7a", "x86_64", "x86")
_MACHINE_TO_ABI = {
    "aarch64": "arm64-v8a",
    "arm64": "arm64-v8a",
    "armv7l": "armeabi-v7a",
    "armv8l": "armeabi-v7a",
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "i686": "x86",
    "i386": "x86",
}


def abi_for_machine(machine: str | None = None) -> str:
    """Android ABI name for a `uname -m` value (default: this host)."""
    machine = (machine or platform.machine()).lower()
    try:
        return _MACHINE_TO_ABI[machine]
    except KeyError:
        raise PermanentTargetError(
            f"no droidoom helper for machine type {machine!r}; supported: {', '.join(ABIS)}"
        ) from None


def binary_path(abi: str) -> Path:
    """Path of the shipped helper for `abi`; raises if this build lacks it."""
    if abi not in ABIS:
        raise PermanentTargetError(f"unsupported ABI {abi!r}; droidoom ships {', '.join(ABIS)}")
    path = BIN_DIR / abi / "droidoom-helper"
    if not path.is_file():
        raise PermanentTargetError(
            f"helper for {abi} is missing at {path}; rebuild with "
            "`python device_scripts/build_helpers.py` (needs `pip install droidoom[build]`)"
        )
    return path


@cache
def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
