"""CLI commands of this package, added to the ``pairflow`` app by :func:`register`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from pairflow.cli_options import ConfigOpt, SetOpt


def register(app: typer.Typer) -> None:
    """Add ``pairflow deploy``: one canary rollout, standalone."""

    @app.command("deploy")
    def deploy(
        model: Annotated[
            str, typer.Option("--model", help="Candidate: models:/NAME/VERSION (or @ALIAS).")
        ],
        input_: Annotated[
            Path, typer.Option("--input", help="Manifest whose held-out rows are replayed.")
        ],
        out: Annotated[Path, typer.Option("--out", help="Writes kept/rejected/report/summary.")],
        config: ConfigOpt = None,
        set_: SetOpt = None,
    ) -> None:
        """Canary-deploy a registered version against the champion: promote or roll back."""
        from rich.console import Console
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        from pairflow.config import load_config
        from pairflow.deploy.controller import StepRecord
        from pairflow.deploy.step import deploy_step
        from pairflow.report import StageOutputs

        console = Console()
        cfg = load_config(config, set_ or [])
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            cfg_path = Path(tmp) / "config.json"
            cfg_path.write_text(cfg.to_json())
            with Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=console,
            ) as progress:
                task = progress.add_task(f"canary {model} (steps {cfg.deploy.steps})", total=None)

                def on_step(rec: StepRecord) -> None:
                    progress.console.print(
                        f"step {rec.weight}%: {rec.verdict} — {'; '.join(rec.reasons)}"
                    )
                    progress.update(task, description=f"canary {model}: step {rec.weight}% done")

                rep = deploy_step(
                    str(cfg_path),
                    str(input_),
                    model,
                    StageOutputs.in_dir(out),
                    summary_path=str(out / "summary.md"),
                    on_step=on_step,
                )
        m = rep.metrics
        console.print(f"[bold]{m.get('decision')}[/bold]: {json.dumps(m.get('reasons'))}")
        console.print(f"report: {out / 'report.json'}; summary: {out / 'summary.md'}")
