"""Plain-Python body of the ``register`` pipeline step (wrapped by ``pairflow.components``)."""

from __future__ import annotations

from pairflow.report import StageOutputs
from pairflow.steps import model_passthrough


def register_step(
    config_path: str, manifest: str, model_dir: str, outputs: StageOutputs, kfp_run_id: str = ""
) -> str:
    """Register the model version in MLflow (pass-through until issue 'register').

    Returns the registered model URI, empty while nothing is registered.
    """
    model_passthrough(
        "register", config_path, manifest, outputs, kfp_run_id, registered_version=None
    )
    return ""
