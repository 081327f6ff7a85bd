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
    out: Annotated[Path, typer.Option("--out", help="Where kept/rejected/report.json go.")],
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
    from pairflow.report import StageOutputs
    from pairflow.stages.register.step import register_step

    cfg = config_for(config, set_, tracking_uri)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    cfg_path.write_text(cfg.to_json())
    outputs = StageOutputs.in_dir(out)
    with console.status("registering in MLflow..."):
        uri = register_step(
            str(cfg_path),
            str(manifest),
            str(model),
            outputs,
            kfp_run_id,
            trained_model=str(trained or ""),
            evaluate_report=str(evaluate_report or ""),
            stage_reports=[str(p) for p in reports or []],
            data_docs=str(data_docs or ""),
            drift_html=str(drift_html or ""),
            eval_plots=[str(p) for p in plots or []],
            drift_reference=str(drift_reference or ""),
            serving_reference=str(serving_reference or ""),
            card_out=str(out / "model_card.md"),
        )
    from pairflow.report import StageReport

    rep = StageReport.read(outputs.report)
    console.print(
        f"registered {rep.metrics['registered_version']} (gate {rep.metrics['gate']}, "
        f"challenger: {rep.metrics['challenger']}, reused: {rep.metrics['reused']})"
    )
    console.print(f"deployable: {uri or 'no (gate did not pass)'}; card: {out / 'model_card.md'}")


def register(app: typer.Typer) -> None:
    """Add ``register`` to ``app``."""
    app.command("register")(register_cmd)
