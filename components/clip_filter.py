"""Step 3: CLIP-score one shard and keep agreeing pairs; then gather the shards."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output

from pairflow.components.base import component


@component
def clip_filter(
    config: Input[Artifact],
    manifest: Input[Dataset],
    shard: int,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    embeddings: Output[Dataset],
    histogram: Output[HTML],
    summary: Output[Markdown],
) -> None:
    """Score the rows of ``shard`` with CLIP and keep pairs whose image and caption agree."""
    from pathlib import Path

    from pairflow.stages.clip_filter.run import FilterOutputs
    from pairflow.stages.clip_filter.step import filter_shard_step
    from pairflow.report import StageOutputs

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    files = FilterOutputs(Path(embeddings.path), Path(histogram.path), Path(summary.path))
    rep = filter_shard_step(config.path, manifest.path, int(shard), out, files)
    kept.metadata.update({"rows": rep.rows_out, "shard": rep.shard})
    embeddings.metadata.update({"format": "pairflow-clip-embeddings/1", "shard": rep.shard})


@component
def gather_filtered(
    config: Input[Artifact],
    shards: Input[list[Dataset]],
    shard_rejected: Input[list[Dataset]],
    shard_reports: Input[list[Artifact]],
    shard_embeddings: Input[list[Dataset]],
    upstream_report: Input[Artifact],
    kfp_run_id: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    embeddings: Output[Dataset],
    histogram: Output[HTML],
    summary: Output[Markdown],
) -> None:
    """Concatenate the filtered shards and their embeddings; global scores and ROC-AUC."""
    from pathlib import Path

    from pairflow.stages.clip_filter.run import FilterOutputs
    from pairflow.stages.clip_filter.step import gather_filtered_step
    from pairflow.report import StageOutputs

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    files = FilterOutputs(Path(embeddings.path), Path(histogram.path), Path(summary.path))
    rep = gather_filtered_step(
        config.path,
        [s.path for s in shards],
        [r.path for r in shard_rejected],
        [r.path for r in shard_reports],
        [e.path for e in shard_embeddings],
        upstream_report.path,
        out,
        files,
        kfp_run_id,
    )
    kept.metadata.update(
        {"rows_in": rep.rows_in, "rows_out": rep.rows_out, "rows_rejected": rep.rows_rejected}
    )
    embeddings.metadata.update({"format": "pairflow-clip-embeddings/1"})
    if rep.metrics.get("roc_auc") is not None:
        summary.metadata.update({"roc_auc": rep.metrics["roc_auc"]})
