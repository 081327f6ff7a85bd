"""Step 6: ONNX export, int8 quantization and distillation, each variant measured."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from pairflow.components.base import component


@component
def compress(
    config: Input[Artifact],
    manifest: Input[Dataset],
    model: Input[Model],
    mlflow_run_id: str,
    compressed: Output[Model],
    report: Output[Artifact],
    summary: Output[Markdown],
) -> None:
    """Build the compressed variants, measure them and pick the one that ships.

    ``compressed`` holds every variant and ``variants.json`` naming the chosen one; the
    summary shows the stage report followed by the variant table.
    """
    from pathlib import Path

    from pairflow.stage_io import load_step_config, write_step_summary
    from pairflow.stages.compress.step import CompressInputs, CompressOutputs, run

    inputs = CompressInputs(manifest.path, model.path, mlflow_run_id)
    outputs = CompressOutputs(compressed=Path(compressed.path), report=Path(report.path))
    rep = run(load_step_config(config.path), inputs, outputs)
    compressed.metadata.update(write_step_summary(outputs.report, summary.path))
    table = Path(compressed.path) / "variants.md"
    if table.is_file():
        with open(summary.path, "a") as fh:
            fh.write("\n" + table.read_text())
        compressed.metadata["chosen_variant"] = rep.metrics.get("chosen", "")
