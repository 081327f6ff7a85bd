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
) -> str:
    """Roll the registered version out behind a canary; return the decision."""
    from pairflow.stages.deploy.step import deploy_step
    from pairflow.report import StageOutputs

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    rep = deploy_step(
        config.path, manifest.path, model_uri, out, kfp_run_id, summary_path=summary.path
    )
    decision = str(rep.metrics.get("decision", "unknown"))
    kept.metadata.update({"rows_in": rep.rows_in, "rows_out": rep.rows_out})
    report.metadata.update({"decision": decision})
    return decision
