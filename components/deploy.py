"""Step 8: canary deploy with automated analysis, rollback or promotion."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from pairflow.components.base import component


@component
def deploy(
    config: Input[Artifact],
    manifest: Input[Dataset],
    model_uri: str,
    mlflow_run_id: str,
    kfp_run_id: str,
    report: Output[Artifact],
    summary: Output[Markdown],
) -> str:
    """Roll the registered version out behind a canary; return the decision."""
    from pathlib import Path

    from pairflow.stage_io import load_step_config
    from pairflow.stages.deploy.step import DeployInputs, DeployOutputs, run

    inputs = DeployInputs(manifest.path, model_uri, kfp_run_id, mlflow_run_id)
    outputs = DeployOutputs(report=Path(report.path), summary=Path(summary.path))
    rep = run(load_step_config(config.path), inputs, outputs)
    decision = str(rep.metrics.get("decision", "unknown"))
    report.metadata.update({"decision": decision})
    return decision
