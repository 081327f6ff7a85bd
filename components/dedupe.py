"""Step 2: drop exact, near and caption duplicates across all validated shards."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from pairflow.components.base import component


@component
def dedupe(
    config: Input[Artifact],
    manifest: Input[Dataset],
    mlflow_run_id: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    summary: Output[Markdown],
) -> None:
    """Global dedupe over the merged signatures that the validate shards computed."""
    from pairflow.report import StageOutputs
    from pairflow.stage_io import load_step_config, write_step_summary
    from pairflow.stages.dedupe.step import DedupeInputs, run

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    run(load_step_config(config.path), DedupeInputs(manifest.path, mlflow_run_id), out)
    kept.metadata.update(write_step_summary(out.report, summary.path))
