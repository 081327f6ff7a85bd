"""Step 1a: ingest raw pairs (folder, Parquet/JSONL, WebDataset, S3) into a manifest."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from pairflow.components.base import component


@component
def ingest(
    config: Input[Artifact],
    kfp_run_id: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    summary: Output[Markdown],
) -> list[int]:
    """Read the configured source; return the shard ids the data stages fan out over."""
    from pairflow.report import StageOutputs
    from pairflow.stages.ingest.step import ingest_step
    from pairflow.stage_io import write_step_summary

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    shards = ingest_step(config.path, out, kfp_run_id)
    kept.metadata.update(write_step_summary(out, summary.path))
    return shards
