"""Where the helper runs. `LocalTarget` (this Linux host) and `AdbTarget` (a phone)."""

from .base import CommandResult, Process, Target, TargetFacts
from .local import LocalTarget

__all__ = ["CommandResult", "LocalTarget", "Process", "Target", "TargetFacts"]
