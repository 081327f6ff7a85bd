"""Step 4: train (torchrun DDP locally, a Kubeflow Trainer TrainJob on a cluster)."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from pairflow.components.base import component


@component
def train(
    config: Input[Artifact],
    manifest: Input[Dataset],
    kfp_run_id: str,
    model: Output[Model],
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    summary: Output[Markdown],
) -> None:
    """Train the configured model on the curated manifest."""
    from pairflow.report import StageOutputs
    from pairflow.stage_io import write_step_summary
    from pairflow.stages.train.step import train_step

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    train_step(config.path, manifest.path, model.path, out, kfp_run_id)
    model.metadata.update(write_step_summary(out, summary.path))
