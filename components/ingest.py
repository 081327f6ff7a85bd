"""Step 1a: ingest raw pairs (folder, Parquet/JSONL, WebDataset, S3) into a manifest."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Output

from pairflow.components.base import component


@component
def ingest(
    config: Input[Artifact],
    mlflow_run_id: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    summary: Output[Markdown],
) -> list[int]:
    """Read the configured source; return the shard ids the data stages fan out over."""
    from pairflow.report import StageOutputs
    from pairflow.stage_io import load_step_config, write_step_summary
    from pairflow.stages.ingest.step import IngestInputs, run

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    shards = run(load_step_config(config.path), IngestInputs(mlflow_run_id), out)
    kept.metadata.update(write_step_summary(out.report, summary.path))
    return shards
