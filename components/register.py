"""Step 7: register the model version in MLflow with lineage and a model card."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Model, Output

from pairflow.components.base import component


@component
def register(
    config: Input[Artifact],
    manifest: Input[Dataset],
    model: Input[Model],
    kfp_run_id: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
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
    from pairflow.stages.register.step import register_step
    from pairflow.report import StageOutputs
    from pairflow.stage_io import write_step_summary

    def path(art: Artifact | None) -> str:
        return art.path if art is not None else ""

    stage_reports = [
        path(a)
        for a in (
            ingest_report,
            validate_report,
            dedupe_report,
            filter_report,
            train_report,
            compress_report,
        )
        if a is not None
    ]
    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    uri = register_step(
        config.path,
        manifest.path,
        model.path,
        out,
        kfp_run_id,
        trained_model=path(trained_model),
        evaluate_report=path(evaluate_report),
        stage_reports=stage_reports,
        data_docs=path(data_docs),
        drift_html=path(drift_html),
        eval_plots=[path(eval_plots)] if eval_plots is not None else [],
        drift_reference=path(drift_reference),
        serving_reference=path(serving_reference),
        kfp_run_name=kfp_run_name,
        card_out=model_card.path,
    )
    kept.metadata.update(write_step_summary(out, summary.path))
    model_card.metadata["model_uri"] = uri
    return uri
