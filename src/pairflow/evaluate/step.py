"""Plain-Python body of the ``evaluate`` pipeline step (wrapped by ``pairflow.components``)."""

from __future__ import annotations

from pairflow.report import StageOutputs
from pairflow.steps import model_passthrough


def evaluate_step(
    config_path: str, manifest: str, model_dir: str, outputs: StageOutputs, kfp_run_id: str = ""
) -> bool:
    """Evaluate against the champion and decide the gate.

    Until issue 'evaluate' lands nothing is measured: the gate is not enforced (it opens),
    and the report says so in ``gate.reasons`` and ``implemented: false``.
    """
    gate = {
        "passed": True,
        "enforced": False,
        "reasons": ["evaluate is not implemented: gate not enforced"],
    }
    model_passthrough("evaluate", config_path, manifest, outputs, kfp_run_id, gate=gate)
    return bool(gate["passed"])
