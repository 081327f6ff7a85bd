"""CLI commands of this package, added to the ``pairflow`` app by :func:`register`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown

from pairflow.cli_options import OutOpt
from pairflow.config import load_config
from pairflow.models.formats import TABLE_FILE
from pairflow.summary import report_markdown
from pairflow.tracking import resolve_mlflow_settings


def register(app: typer.Typer) -> None:
    """Add ``pairflow compress``."""

    @app.command("compress")
    def compress_cmd(
        model: Annotated[Path, typer.Option("--model", help="Trained model directory.")],
        input_: Annotated[Path, typer.Option("--input", help="Manifest (held-out rows used).")],
        out: OutOpt,
        config: Annotated[Path | None, typer.Option("--config", help="Config YAML.")] = None,
        set_: Annotated[
            list[str] | None, typer.Option("--set", help="Config override key=value.")
        ] = None,
    ) -> None:
        """Export, quantize (and distil) a model; write every variant, its measured figures and
        variants.json (chosen variant) into --out/compressed, and report.json into --out.

        The same step the pipeline runs: the report (printed as the pipeline's step summary
        shows it) holds every variant's figures, then the variant table."""

        # lazy: boto3, botocore, onnxruntime, pandas, pyarrow, torch (slow to import); only this
        # path needs it
        from pairflow.stages.compress.step import CompressInputs, CompressOutputs, run

        console = Console()
        cfg = resolve_mlflow_settings(load_config(config, set_ or []))
        outputs = CompressOutputs.in_dir(out)
        with console.status("compressing") as status:
            report = run(
                cfg,
                CompressInputs(str(input_), str(model)),
                outputs,
                progress=lambda msg: status.update(f"compress: {msg}"),
            )
        console.print(Markdown(report_markdown(report)))
        console.print(Markdown((outputs.compressed / TABLE_FILE).read_text()))
