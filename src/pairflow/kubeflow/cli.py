"""CLI commands of this package, added to the ``pairflow`` app by :func:`register`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add this package's commands to ``app`` (none yet)."""
    del app
