"""Step 1b: validate one shard against the data contract (inside dsl.ParallelFor)."""

from kfp.dsl import Artifact, Dataset, Input, Output

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
    """Validate the rows of ``shard``; quarantine bad rows with a reason."""
    from pairflow.report import StageOutputs
    from pairflow.steps import validate_shard_step

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    rep = validate_shard_step(config.path, manifest.path, int(shard), out)
    kept.metadata.update({"rows": rep.rows_out, "shard": rep.shard})
