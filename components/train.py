"""Step 4: train (torchrun DDP locally, a Kubeflow Trainer TrainJob on a cluster)."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from pairflow.components.base import component


@component
def train(
    config: Input[Artifact],
    manifest: Input[Dataset],
    mlflow_run_id: str,
    kfp_run_id: str,
    model: Output[Model],
    report: Output[Artifact],
    summary: Output[Markdown],
) -> None:
    """Train the configured model on the curated manifest."""
    from pathlib import Path

    from pairflow.stage_io import load_step_config, write_step_summary
    from pairflow.stages.train.step import TrainInputs, TrainOutputs, run

    inputs = TrainInputs(manifest.path, mlflow_run_id=mlflow_run_id, kfp_run_id=kfp_run_id)
    outputs = TrainOutputs(model=Path(model.path), report=Path(report.path))
    run(load_step_config(config.path), inputs, outputs)
    model.metadata.update(write_step_summary(outputs.report, summary.path))
