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
    from pairflow.stages.validate.step import validate_shard_step

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    rep = validate_shard_step(config.path, manifest.path, int(shard), out)
    kept.metadata.update({"rows": rep.rows_out, "shard": rep.shard})


@component
def data_contract(
    config: Input[Artifact],
    shards: Input[list[Dataset]],
    shard_rejected: Input[list[Dataset]],
    shard_reports: Input[list[Artifact]],
    upstream_report: Input[Artifact],
    kfp_run_id: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    data_docs: Output[HTML],
    data_docs_site: Output[Artifact],
    summary: Output[Markdown],
) -> None:
    """Merge validated shards and check the Great Expectations data contract."""
    from pairflow.report import StageOutputs
    from pairflow.stages.validate.step import contract_step
    from pairflow.stage_io import write_step_summary

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    contract_step(
        config.path,
        [s.path for s in shards],
        [r.path for r in shard_rejected],
        [r.path for r in shard_reports],
        upstream_report.path,
        out,
        data_docs.path,
        data_docs_site.path,
        kfp_run_id,
    )
    kept.metadata.update(write_step_summary(out, summary.path))
