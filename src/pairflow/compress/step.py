"""Plain-Python body of the ``compress`` pipeline step (wrapped by ``pairflow.components``)."""

from __future__ import annotations

from pairflow.report import StageOutputs, StageReport
from pairflow.steps import model_passthrough, not_implemented_marker


def compress_step(
    config_path: str,
    manifest: str,
    model_dir: str,
    compressed_dir: str,
    outputs: StageOutputs,
    kfp_run_id: str = "",
) -> StageReport:
    """Build int8/distilled variants (pass-through until issue 'compress')."""
    not_implemented_marker(compressed_dir, "compress")
    return model_passthrough("compress", config_path, manifest, outputs, kfp_run_id)
