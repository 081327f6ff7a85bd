"""CLI commands of this package, added to the ``pairflow`` app by :func:`register`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from pairflow.cli_options import ConfigOpt, OutOpt, SetOpt, ensure_writable_dir
from pairflow.config import load_config
from pairflow.metrics import TrainMetrics
from pairflow.stages.train.launch import PROGRESS_PREFIX
from pairflow.tracking import resolve_mlflow_settings


def register(app: typer.Typer) -> None:
    """Add ``pairflow train --input MANIFEST --out DIR [--config F] [--set k=v]...``."""

    @app.command("train")
    def train_cmd(
        input_: Annotated[str, typer.Option("--input", help="Curated manifest (.parquet).")],
        out: OutOpt,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        launcher: Annotated[
            str | None,
            typer.Option("--launcher", help="local (torchrun) or trainjob; sets train.launcher."),
        ] = None,
        dry_run: Annotated[
            bool,
            typer.Option(
                "--dry-run", help="trainjob: print the TrainJob as YAML; nothing is sent."
            ),
        ] = False,
    ) -> None:
        """Train the configured model: writes model/ and report.json."""
        if launcher is not None:
            set_ = [*(set_ or []), f"train.launcher={launcher}"]
        if dry_run:
            # lazy: the TrainJob plan imports torch (checkpoints); `pairflow --help` should not
            from pairflow.stages.train.dry_run import trainjob_yaml

            typer.echo(trainjob_yaml(load_config(config, set_ or []), input_, out), nl=False)
            return

        # lazy: boto3, botocore, pandas, pyarrow, torch (slow to import); only this path needs it
        from pairflow.stages.train.step import TrainInputs, TrainOutputs, run

        console = Console()
        cfg = resolve_mlflow_settings(load_config(config, set_ or []))
        ensure_writable_dir(out)
        outputs = TrainOutputs.in_dir(out)
        with Progress(
            TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), console=console
        ) as progress:
            task = progress.add_task("train", total=None)

            def on_line(line: str) -> None:
                if line.startswith(PROGRESS_PREFIX):
                    done, total = line[len(PROGRESS_PREFIX) :].split("/")
                    progress.update(task, completed=int(done), total=int(total))
                elif line.strip():
                    progress.console.print(line, markup=False, highlight=False)

            report = run(cfg, TrainInputs(input_), outputs, on_line=on_line)
        m = report.metrics_as(TrainMetrics)
        console.print(
            f"train: {m.rows_train} train / {m.rows_val} val / {m.rows_holdout} held-out "
            f"rows, {m.epochs} epochs on {m.world_size} processes, "
            f"{m.samples_per_s} samples/s, best val {m.best_val_metric} → {outputs.model}"
        )
