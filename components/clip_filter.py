"""Step 3: CLIP-score one shard and keep agreeing pairs; then gather the shards."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from pairflow.components.base import component


@component
def clip_filter(
    config: Input[Artifact],
    manifest: Input[Dataset],
    shard: int,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
) -> None:
    """Score the rows of ``shard`` with CLIP and keep pairs above the threshold."""
    from pairflow.report import StageOutputs
    from pairflow.steps import filter_shard_step

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    rep = filter_shard_step(config.path, manifest.path, int(shard), out)
    kept.metadata.update({"rows": rep.rows_out, "shard": rep.shard})


@component
def gather_filtered(
    config: Input[Artifact],
    shards: Input[list[Dataset]],
    shard_rejected: Input[list[Dataset]],
    shard_reports: Input[list[Artifact]],
    upstream_report: Input[Artifact],
    kfp_run_id: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    summary: Output[Markdown],
) -> None:
    """Concatenate the filtered shards; its report sums the shard reports."""
    from pairflow.report import StageOutputs
    from pairflow.steps import gather_filtered_step, write_step_summary

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    gather_filtered_step(
        config.path,
        [s.path for s in shards],
        [r.path for r in shard_rejected],
        [r.path for r in shard_reports],
        upstream_report.path,
        out,
        kfp_run_id,
    )
    kept.metadata.update(write_step_summary(out, summary.path))
