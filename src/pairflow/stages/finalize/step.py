"""Exit handler: record the pipeline's final state in the log and MLflow."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from pairflow import tracking
from pairflow.stage_io import setup_logging, step_tracking_uri

log = logging.getLogger("pairflow.stages.finalize")


@dataclass(frozen=True)
class FinalizeInputs:
    """Where the pipeline's MLflow run lives, its KFP run id and KFP's final status.

    The exit handler gets no config artifact and no run id from resolve-config: it must also
    run when resolve-config itself failed, so it finds the run by its KFP run id tag.
    """

    tracking_uri: str
    experiment: str
    workdir: str
    kfp_run_id: str
    status: dict[str, Any] = field(default_factory=dict)


def run(inputs: FinalizeInputs) -> str:
    """Record the pipeline's final state (the ExitHandler step) in the log and MLflow."""
    setup_logging()
    status = inputs.status
    state = str(status.get("state", "UNKNOWN"))
    error = status.get("error") or {}
    message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
    uri = step_tracking_uri(inputs.tracking_uri, inputs.workdir)
    kfp_run_id = inputs.kfp_run_id
    run_id = tracking.record_final_status(uri, inputs.experiment, kfp_run_id, state, message)
    log.info("pipeline run %s finished: %s %s (MLflow run %s)", kfp_run_id, state, message, run_id)
    return state
