"""Step 6: ONNX export, int8 quantization and distillation, each variant measured."""

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from pairflow.components.base import component


@component
def compress(
    config: Input[Artifact],
    manifest: Input[Dataset],
    model: Input[Model],
    kfp_run_id: str,
    compressed: Output[Model],
    kept: Output[Dataset],
    rejected: Output[Dataset],
    report: Output[Artifact],
    summary: Output[Markdown],
) -> None:
    """Build the compressed variants, measure them and pick the one that ships.

    ``compressed`` holds every variant and ``variants.json`` naming the chosen one; the
    summary shows the stage report followed by the variant table.
    """
    from pathlib import Path

    from pairflow.stages.compress.step import compress_step
    from pairflow.report import StageOutputs
    from pairflow.stage_io import write_step_summary

    out = StageOutputs(kept=kept.path, rejected=rejected.path, report=report.path)
    rep = compress_step(config.path, manifest.path, model.path, compressed.path, out, kfp_run_id)
    compressed.metadata.update(write_step_summary(out, summary.path))
    table = Path(compressed.path) / "variants.md"
    if table.is_file():
        with open(summary.path, "a") as fh:
            fh.write("\n" + table.read_text())
        compressed.metadata["chosen_variant"] = rep.metrics.get("chosen", "")
