"""Plain-Python body of the ``train`` pipeline step (wrapped by ``pairflow.components``)."""

from __future__ import annotations

from pairflow.report import StageOutputs, StageReport
from pairflow.steps import model_passthrough, not_implemented_marker


def train_step(
    config_path: str, manifest: str, model_dir: str, outputs: StageOutputs, kfp_run_id: str = ""
) -> StageReport:
    """Train the model (pass-through until issue 'train': no model is produced)."""
    not_implemented_marker(model_dir, "train")
    return model_passthrough("train", config_path, manifest, outputs, kfp_run_id)
