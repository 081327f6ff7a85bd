"""Step 7: register the model version in MLflow with lineage and a model card."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output

from pairflow.components.base import component


@component
def register(
    config: Input[Artifact],
    manifest: Input[Dataset],
    model: Input[Model],
    mlflow_run_id: str,
    kfp_run_id: str,
    report: Output[Artifact],
    summary: Output[Markdown],
    model_card: Output[Markdown],
    kfp_run_name: str = "",
    trained_model: Input[Model] = None,
    evaluate_report: Input[Artifact] = None,
    ingest_report: Input[Artifact] = None,
    validate_report: Input[Artifact] = None,
    dedupe_report: Input[Artifact] = None,
    filter_report: Input[Artifact] = None,
    train_report: Input[Artifact] = None,
    compress_report: Input[Artifact] = None,
    data_docs: Input[Artifact] = None,
    drift_html: Input[HTML] = None,
    eval_plots: Input[HTML] = None,
    drift_reference: Input[Dataset] = None,
    serving_reference: Input[Dataset] = None,
) -> str:
    """Register the chosen variant; return its ``models:/`` URI (empty unless the gate passed)."""
    from pathlib import Path

    from pairflow.stage_io import load_step_config, write_step_summary
    from pairflow.stages.register.step import RegisterInputs, RegisterOutputs, run

    def path(art: Artifact | None) -> Path | None:
        # KFP passes an unset optional input as None (or, in some runners, an empty path)
        return Path(art.path) if art is not None and art.path else None

    stage_reports = (
        ingest_report,
        validate_report,
        dedupe_report,
        filter_report,
        train_report,
        compress_report,
    )
    inputs = RegisterInputs(
        manifest=Path(manifest.path),
        compressed=path(model),
        trained=path(trained_model),
        evaluate_report=path(evaluate_report),
        stage_reports=[p for p in map(path, stage_reports) if p is not None],
        data_docs=path(data_docs),
        drift_html=path(drift_html),
        eval_plots=[p for p in [path(eval_plots)] if p is not None],
        drift_reference=path(drift_reference),
        serving_reference=path(serving_reference),
        kfp_run_id=kfp_run_id,
        kfp_run_name=kfp_run_name,
        mlflow_run_id=mlflow_run_id,
    )
    outputs = RegisterOutputs(report=Path(report.path), model_card=Path(model_card.path))
    uri = run(load_step_config(config.path), inputs, outputs).deployable_uri
    report.metadata.update(write_step_summary(outputs.report, summary.path))
    model_card.metadata["model_uri"] = uri
    return uri
