"""Step 7: register the model version in MLflow with lineage and a model card."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

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
) -> str:
    """Register the chosen variant; return its ``models:/`` URI (empty if none)."""
    from pairflow.registry.step import register_step
    from pairflow.report import StageOutputs
    from pairflow.steps import write_step_summary

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    uri = register_step(config.path, manifest.path, model.path, out, kfp_run_id)
    kept.metadata.update(write_step_summary(out, summary.path))
    return uri
