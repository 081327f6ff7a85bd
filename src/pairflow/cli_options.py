"""Option types shared by every ``pairflow`` command (one definition, one help text)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override: key.path=value.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Output directory.")]
