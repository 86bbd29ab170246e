"""CLI commands: farm (registered on droidoom.cli.app)."""

from __future__ import annotations

from .cli import app  # noqa: F401
