"""Step 5: evaluate the candidate against the champion; its boolean output is the gate."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from pairflow.components.base import component


@component
def evaluate(
    config: Input[Artifact],
    manifest: Input[Dataset],
    model: Input[Model],
    kfp_run_id: str,
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    summary: Output[Markdown],
) -> bool:
    """Measure the candidate and return whether the gate passed."""
    from pairflow.evaluate.step import evaluate_step
    from pairflow.report import StageOutputs
    from pairflow.steps import write_step_summary

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    passed = evaluate_step(config.path, manifest.path, model.path, out, kfp_run_id)
    kept.metadata.update(write_step_summary(out, summary.path))
    return passed
