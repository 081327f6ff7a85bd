"""Step 5: evaluate the candidate against the champion; its boolean output is the gate."""

from kfp.dsl import (
    HTML,
    Artifact,
    ClassificationMetrics,
    Dataset,
    Input,
    Markdown,
    Metrics,
    Model,
    Output,
)

from pairflow.components.base import component


@component
def evaluate(
    config: Input[Artifact],
    manifest: Input[Dataset],
    model: Input[Model],
    mlflow_run_id: str,
    report: Output[Artifact],
    summary: Output[Markdown],
    metrics: Output[Metrics],
    classification: Output[ClassificationMetrics],
    drift: Output[HTML],
    reference: Output[Dataset],
    plots: Output[HTML],
    serving_reference: Output[Dataset],
    embeddings: Input[Dataset] = None,
) -> bool:
    """Measure the candidate and the champion on held-out rows; return whether the gate passed.

    ``embeddings`` (optional): the clip-filter's embeddings of the curated rows, used for the
    drift reference of this run. ``reference`` is that reference, for register to attach;
    ``plots`` (recall@k, deltas with intervals, confusion matrices) goes to register too,
    and ``serving_reference`` (this run's rows embedded by the candidate: the drift monitor's
    baseline once it serves).
    """
    from pathlib import Path

    from pairflow.stage_io import load_step_config
    from pairflow.stages.evaluate.step import EvaluateInputs, EvaluateOutputs, run

    inputs = EvaluateInputs(
        manifest.path,
        model.path,
        embeddings=embeddings.path if embeddings is not None else None,
        mlflow_run_id=mlflow_run_id,
    )
    outputs = EvaluateOutputs(
        Path(report.path),
        Path(drift.path),
        Path(reference.path),
        Path(summary.path),
        Path(plots.path),
        Path(serving_reference.path),
    )
    result = run(load_step_config(config.path), inputs, outputs)
    for name, value in sorted(result.scalars.items()):
        metrics.log_metric(name, value)
    if result.confusion is not None:
        classification.log_confusion_matrix(result.class_names, result.confusion)
    rep = result.report
    report.metadata.update({"gate_passed": result.passed, "implemented": rep.implemented})
    reference.metadata.update({"format": "pairflow-drift-reference/1"})
    serving_reference.metadata.update({"format": "pairflow-drift-reference/1", "role": "serving"})
    return result.passed
