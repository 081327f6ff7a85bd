"""Shared by every ``pairflow`` command: option types (one definition, one help text), the
console, and the output-directory check."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pairflow.errors import PairflowError

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override: key.path=value.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output directory.")]


# The run summary fits 120 columns; the same width when output is not a terminal (make demo, CI).
console = Console(width=None if sys.stdout.isatty() else 120)
err_console = Console(stderr=True)


def ensure_writable_dir(path: Path, what: str = "output dir") -> Path:
    """Create ``path`` if needed; a one-line error when it cannot be written."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PairflowError(f"{path}: cannot create {what} ({exc.strerror})") from exc
    if not path.is_dir() or not os.access(path, os.W_OK):
        raise PairflowError(f"{path}: {what} is not writable")
    return path


def progress_bar() -> Progress:
    """A progress bar on the shared console (description, bar, done/total, elapsed)."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Stream every step's executor log (they always go to files)."
    ),
]
