"""Step 1b: validate one shard (inside dsl.ParallelFor), then the dataset-level contract."""

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Output

from pairflow.components.base import component


@component
def validate(
    config: Input[Artifact],
    manifest: Input[Dataset],
    shard: int,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
) -> None:
    """Check the rows of ``shard``; quarantine bad rows with a reason; add image signatures."""
    from pairflow.report import StageOutputs
    from pairflow.stage_io import ShardInputs, load_step_config
    from pairflow.stages.validate.step import run_shard

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    rep = run_shard(load_step_config(config.path), ShardInputs(manifest.path, int(shard)), out)
    kept.metadata.update({"rows": rep.rows_out, "shard": rep.shard})


@component
def data_contract(
    config: Input[Artifact],
    shards: Input[list[Dataset]],
    shard_rejected: Input[list[Dataset]],
    shard_reports: Input[list[Artifact]],
    upstream_report: Input[Artifact],
    mlflow_run_id: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    data_docs: Output[HTML],
    data_docs_site: Output[Artifact],
    summary: Output[Markdown],
) -> None:
    """Merge validated shards and check the Great Expectations data contract."""
    from pathlib import Path

    from pairflow.report import StageOutputs
    from pairflow.stage_io import GatherInputs, load_step_config, write_step_summary
    from pairflow.stages.validate.step import ContractOutputs, run

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    inputs = GatherInputs(
        shard_manifests=[s.path for s in shards],
        shard_rejected=[r.path for r in shard_rejected],
        shard_reports=[r.path for r in shard_reports],
        upstream_report=upstream_report.path,
        mlflow_run_id=mlflow_run_id,
    )
    outputs = ContractOutputs(out, Path(data_docs.path), Path(data_docs_site.path))
    run(load_step_config(config.path), inputs, outputs)
    kept.metadata.update(write_step_summary(out.report, summary.path))
