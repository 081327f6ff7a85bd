"""CLI commands of this package, added to the ``pairflow`` app by :func:`register`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from pairflow.cli_options import ConfigOpt, SetOpt
from pairflow.config import load_config
from pairflow.errors import PairflowError
from pairflow.metrics import DeployMetrics
from pairflow.stages.deploy import aliases
from pairflow.tracking import resolve_mlflow_settings


def register(app: typer.Typer) -> None:
    """Add ``pairflow deploy``: one canary rollout, standalone."""

    @app.command("deploy")
    def deploy(
        model: Annotated[
            str, typer.Option("--model", help="Candidate: models:/NAME/VERSION (or @ALIAS).")
        ],
        input_: Annotated[
            Path | None,
            typer.Option("--input", help="Manifest whose held-out rows are replayed."),
        ] = None,
        out: Annotated[
            Path | None, typer.Option("--out", help="Writes report.json and summary.md.")
        ] = None,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        backend: Annotated[
            str | None, typer.Option("--backend", help="local or kserve; sets deploy.backend.")
        ] = None,
        dry_run: Annotated[
            bool,
            typer.Option(
                "--dry-run",
                help="kserve: print the JSON patches (start, steps, rollback, promote) as YAML.",
            ),
        ] = False,
        stable: Annotated[
            str | None,
            typer.Option("--stable", help="Dry run: stable version (default: the champion)."),
        ] = None,
        isvc_file: Annotated[
            Path | None,
            typer.Option(
                "--isvc-file", help="Dry run: InferenceService YAML instead of the live one."
            ),
        ] = None,
    ) -> None:
        """Canary-deploy a registered version against the champion: promote or roll back."""
        if backend is not None:
            set_ = [*(set_ or []), f"deploy.backend={backend}"]
        if dry_run:
            _dry_run(model, config, set_ or [], stable, isvc_file)
            return
        if input_ is None or out is None:
            raise typer.BadParameter("--input and --out are required (unless --dry-run)")

        # lazy: pandas, pyarrow, scipy (slow to import); only this path needs it
        from pairflow.stage_io import setup_logging
        from pairflow.stages.deploy.controller import StepRecord
        from pairflow.stages.deploy.step import DeployInputs, DeployOutputs, run

        setup_logging()
        console = Console()
        cfg = resolve_mlflow_settings(load_config(config, set_ or []))
        out.mkdir(parents=True, exist_ok=True)
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

            rep = run(
                cfg,
                DeployInputs(str(input_), model),
                DeployOutputs.in_dir(out),
                on_step=on_step,
            )
        m = rep.metrics_as(DeployMetrics)
        console.print(f"[bold]{m.decision}[/bold]: {json.dumps(m.reasons)}")
        console.print(f"report: {out / 'report.json'}; summary: {out / 'summary.md'}")


def _dry_run(
    model: str, config: Path | None, set_: list[str], stable: str | None, isvc_file: Path | None
) -> None:

    # lazy: kubernetes (slow to import); only the KServe dry run needs it
    from pairflow.stages.deploy.kserve_dry_run import (
        isvc_from_cluster,
        isvc_from_file,
        patches_yaml,
    )

    cfg = load_config(config, set_)
    if cfg.deploy.backend != "kserve":
        raise PairflowError("--dry-run prints KServe patches: use it with --backend kserve")
    name, version = aliases.parse_model_uri(model)
    if stable is None or version.startswith("@"):
        from pairflow.registry.client import Registry
        from pairflow.tracking import resolve_mlflow_settings

        reg = Registry.from_config(resolve_mlflow_settings(cfg).mlflow)
        rollout = aliases.resolve_rollout(reg, model, cfg.deploy.alias_champion)
        if stable is not None:
            rollout = aliases.Rollout(rollout.name, rollout.candidate, stable)
    else:
        rollout = aliases.Rollout(name, version, stable)
    if rollout.stable is None:
        raise PairflowError(f"{model}: no champion to canary against (pass --stable VERSION)")
    k = cfg.deploy.kserve
    isvc = (
        isvc_from_file(isvc_file, k.inference_service)
        if isvc_file is not None
        else isvc_from_cluster(cfg.deploy)
    )
    typer.echo(patches_yaml(isvc, rollout, cfg.deploy), nl=False)
