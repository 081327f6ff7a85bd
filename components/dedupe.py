"""Step 2: drop exact, near and caption duplicates across all validated shards."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from pairflow.components.base import component


@component
def dedupe(
    config: Input[Artifact],
    manifest: Input[Dataset],
    kfp_run_id: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    summary: Output[Markdown],
) -> None:
    """Global dedupe over the merged signatures that the validate shards computed."""
    from pairflow.report import StageOutputs
    from pairflow.stages.dedupe.step import dedupe_step
    from pairflow.stage_io import write_step_summary

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    dedupe_step(config.path, manifest.path, out, kfp_run_id)
    kept.metadata.update(write_step_summary(out, summary.path))
