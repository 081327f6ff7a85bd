"""Plain-Python body of the ``deploy`` pipeline step (wrapped by ``pairflow.components``)."""

from __future__ import annotations

from pairflow.report import StageOutputs, StageReport
from pairflow.steps import model_passthrough


def deploy_step(
    config_path: str, manifest: str, model_uri: str, outputs: StageOutputs, kfp_run_id: str = ""
) -> StageReport:
    """Canary-deploy the registered version (pass-through until issue 'serve-canary')."""
    return model_passthrough(
        "deploy",
        config_path,
        manifest,
        outputs,
        kfp_run_id,
        decision="not_deployed",
        model_uri=model_uri or None,
    )
