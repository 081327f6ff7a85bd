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

    from pairflow.report import StageOutputs
    from pairflow.stage_io import ShardInputs, load_step_config
    from pairflow.stages.clip_filter.run import FilterOutputs
    from pairflow.stages.clip_filter.step import ClipFilterOutputs, run_shard

    out = ClipFilterOutputs(
        StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path),
        FilterOutputs(Path(embeddings.path), Path(histogram.path), Path(summary.path)),
    )
    rep = run_shard(load_step_config(config.path), ShardInputs(manifest.path, int(shard)), out)
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
    mlflow_run_id: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    embeddings: Output[Dataset],
    histogram: Output[HTML],
    summary: Output[Markdown],
) -> None:
    """Concatenate the filtered shards and their embeddings; global scores and ROC-AUC."""
    from pathlib import Path

    from pairflow.report import StageOutputs
    from pairflow.stage_io import load_step_config
    from pairflow.stages.clip_filter.run import FilterOutputs
    from pairflow.stages.clip_filter.step import ClipFilterOutputs, FilterGatherInputs, run

    out = ClipFilterOutputs(
        StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path),
        FilterOutputs(Path(embeddings.path), Path(histogram.path), Path(summary.path)),
    )
    inputs = FilterGatherInputs(
        shard_manifests=[s.path for s in shards],
        shard_rejected=[r.path for r in shard_rejected],
        shard_reports=[r.path for r in shard_reports],
        shard_embeddings=[e.path for e in shard_embeddings],
        upstream_report=upstream_report.path,
        mlflow_run_id=mlflow_run_id,
    )
    rep = run(load_step_config(config.path), inputs, out)
    kept.metadata.update(
        {"rows_in": rep.rows_in, "rows_out": rep.rows_out, "rows_rejected": rep.rows_rejected}
    )
    embeddings.metadata.update({"format": "pairflow-clip-embeddings/1"})
    if rep.metrics.get("roc_auc") is not None:
        summary.metadata.update({"roc_auc": rep.metrics["roc_auc"]})
