"""``pairflow register``: the register stage, standalone (the same step the pipeline runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pairflow.cli_options import ConfigOpt, SetOpt, console
from pairflow.registry.cli import UriOpt, config_for


def register_cmd(
    manifest: Annotated[Path, typer.Option("--manifest", help="Curated (kept) manifest.")],
    model: Annotated[
        Path, typer.Option("--model", help="Compressed dir (variants.json) or an HF model dir.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Where report.json and the card go.")],
    trained: Annotated[
        Path | None, typer.Option("--trained", help="Trained HF model dir (fallback).")
    ] = None,
    evaluate_report: Annotated[
        Path | None, typer.Option("--evaluate-report", help="Evaluate's report.json.")
    ] = None,
    reports: Annotated[
        list[Path] | None, typer.Option("--report", help="A stage report.json (repeatable).")
    ] = None,
    data_docs: Annotated[Path | None, typer.Option("--data-docs", help="GX Data Docs.")] = None,
    drift_html: Annotated[Path | None, typer.Option("--drift-html")] = None,
    plots: Annotated[list[Path] | None, typer.Option("--plot", help="Repeatable.")] = None,
    drift_reference: Annotated[Path | None, typer.Option("--drift-reference")] = None,
    serving_reference: Annotated[
        Path | None,
        typer.Option("--serving-reference", help="Evaluate's serving_reference.parquet."),
    ] = None,
    kfp_run_id: Annotated[
        str, typer.Option("--kfp-run-id", help="Pipeline run id (idempotency key).")
    ] = "",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Register a model version (standalone register stage) and print its URI and card."""
    # lazy: mlflow, pandas, pyarrow (slow to import); only this path needs it
    from pairflow.stage_io import setup_logging
    from pairflow.stages.register.step import RegisterInputs, RegisterOutputs, run

    setup_logging()
    cfg = config_for(config, set_, tracking_uri)
    out.mkdir(parents=True, exist_ok=True)
    inputs = RegisterInputs(
        manifest=manifest,
        compressed=model,
        trained=trained,
        evaluate_report=evaluate_report,
        stage_reports=list(reports or []),
        data_docs=data_docs,
        drift_html=drift_html,
        eval_plots=list(plots or []),
        drift_reference=drift_reference,
        serving_reference=serving_reference,
        kfp_run_id=kfp_run_id,
    )
    outputs = RegisterOutputs.in_dir(out)
    with console.status("registering in MLflow..."):
        result = run(cfg, inputs, outputs)
    console.print(
        f"registered {result.uri} (gate {result.gate}, "
        f"challenger: {result.challenger}, reused: {result.reused})"
    )
    uri = result.deployable_uri
    console.print(f"deployable: {uri or 'no (gate did not pass)'}; card: {outputs.model_card}")


def register(app: typer.Typer) -> None:
    """Add ``register`` to ``app``."""
    app.command("register")(register_cmd)
