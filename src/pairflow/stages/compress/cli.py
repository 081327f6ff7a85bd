"""CLI commands of this package, added to the ``pairflow`` app by :func:`register`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pairflow.cli_options import OutOpt


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
        """Export, quantize (and distil) a model; write every variant, its measured figures,
        variants.json (chosen variant) and kept.parquet / report.json into --out."""
        from rich.console import Console
        from rich.markdown import Markdown

        from pairflow.config import load_config
        from pairflow.data.schema import empty_rejected, read_manifest, write_manifest
        from pairflow.report import StageOutputs, StageReport, Stopwatch
        from pairflow.stages.compress.build import compress_model

        console = Console()
        watch = Stopwatch()
        cfg = load_config(config, set_ or [])
        df = read_manifest(input_)
        with console.status("compressing") as status:
            result = compress_model(
                model,
                df,
                cfg.compress,
                out / "compressed",
                holdout_fraction=cfg.evaluate.holdout_fraction,
                s3=cfg.data.s3,
                seed=cfg.run.seed,
                progress=lambda msg: status.update(f"compress: {msg}"),
            )
        outputs = StageOutputs.in_dir(out)
        write_manifest(df, outputs.kept)
        write_manifest(empty_rejected(list(df.columns)), outputs.rejected)
        StageReport(
            stage="compress",
            rows_in=len(df),
            rows_out=len(df),
            seconds=watch.seconds,
            metrics={"chosen": result.index.chosen, "held_out_rows": result.held_out_rows},
        ).write(outputs.report)
        console.print(Markdown(result.table))
