"""Step 2: merge validated shards and drop exact, near and caption duplicates across them."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from pairflow.components.base import component


@component
def dedupe(
    config: Input[Artifact],
    shards: Input[list[Dataset]],
    shard_reports: Input[list[Artifact]],
    upstream_report: Input[Artifact],
    kfp_run_id: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    validate_report: Output[Artifact],
    summary: Output[Markdown],
) -> None:
    """Global dedupe over all validated shards."""
    from pairflow.report import StageOutputs
    from pairflow.steps import dedupe_step, write_step_summary

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    dedupe_step(
        config.path,
        [s.path for s in shards],
        [r.path for r in shard_reports],
        upstream_report.path,
        out,
        validate_report.path,
        kfp_run_id,
    )
    kept.metadata.update(write_step_summary(out, summary.path))
