"""CLI commands of this package, added to the ``pairflow`` app by :func:`register`.

``pairflow evaluate`` exit codes: 0 the gate passed, 1 the gate blocked the candidate,
2 bad input (missing/unreadable manifest, model or embeddings, bad config).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markdown import Markdown

from pairflow.cli_options import ConfigOpt, OutOpt, SetOpt, ensure_writable_dir
from pairflow.config import load_config
from pairflow.errors import InputDataError
from pairflow.tracking import resolve_mlflow_settings

GATE_BLOCKED_EXIT = 1


def register(app: typer.Typer) -> None:
    """Add ``pairflow evaluate --input MANIFEST --model DIR --out DIR [options]``."""

    @app.command("evaluate")
    def evaluate_cmd(
        input_: Annotated[str, typer.Option("--input", help="Manifest (.parquet/.jsonl).")],
        model: Annotated[
            str, typer.Option("--model", help="Candidate: directory, s3:// or models:/ URI.")
        ],
        out: OutOpt,
        champion: Annotated[
            str | None,
            typer.Option(
                "--champion",
                help="Model to beat (directory, s3:// or models:/ URI); default: "
                "models:/<register.model_name>@champion from MLflow, if any.",
            ),
        ] = None,
        embeddings: Annotated[
            Path | None,
            typer.Option("--embeddings", help="Clip-filter embeddings Parquet (drift)."),
        ] = None,
        config: ConfigOpt = None,
        set_: SetOpt = None,
    ) -> None:
        """Measure the candidate (and champion) on held-out rows and decide the gate.

        Writes report.json, drift.html, drift_reference.parquet, serving_reference.parquet,
        summary.md and plots.html into --out.
        Exit code 0: gate passed; 1: gate blocked; 2: bad input.
        """

        # lazy: pandas, pyarrow, scipy (slow to import); only this path needs it
        from pairflow.stages.evaluate.step import EvaluateInputs, EvaluateOutputs, run

        console = Console()
        cfg = resolve_mlflow_settings(load_config(config, set_ or []))
        if embeddings is not None and not embeddings.is_file():
            raise InputDataError(f"{embeddings}: embeddings Parquet not found")
        if not input_.startswith("s3://") and not Path(input_).is_file():
            raise InputDataError(f"{input_}: manifest not found")
        ensure_writable_dir(out)
        with console.status("[bold]evaluate[/bold]: starting", spinner="dots") as status:

            def progress(msg: str) -> None:
                console.log(f"evaluate: {msg}", markup=False, highlight=False)
                status.update(f"[bold]evaluate[/bold]: {msg}")

            inputs = EvaluateInputs(
                input_,
                model,
                embeddings=str(embeddings) if embeddings is not None else None,
                champion=champion,
            )
            outcome = run(cfg, inputs, EvaluateOutputs.in_dir(out), progress=progress)
        console.print(Markdown(outcome.markdown))
        verdict = "PASSED" if outcome.passed else "BLOCKED"
        console.print(f"gate {verdict}; outputs in {out}", markup=False, highlight=False)
        if not outcome.passed:
            raise typer.Exit(GATE_BLOCKED_EXIT)
