"""Step 8: canary deploy with automated analysis, rollback or promotion."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from pairflow.components.base import component


@component
def deploy(
    config: Input[Artifact],
    manifest: Input[Dataset],
    model_uri: str,
    kfp_run_id: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    summary: Output[Markdown],
) -> None:
    """Roll the registered version out behind a canary."""
    from pairflow.deploy.step import deploy_step
    from pairflow.report import StageOutputs
    from pairflow.steps import write_step_summary

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    deploy_step(config.path, manifest.path, model_uri, out, kfp_run_id)
    kept.metadata.update(write_step_summary(out, summary.path))
