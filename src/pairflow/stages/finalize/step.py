"""Exit handler: record the pipeline's final state in the log and MLflow."""

from __future__ import annotations

import logging
from typing import Any

from pairflow import tracking
from pairflow.stage_io import setup_logging, step_tracking_uri

log = logging.getLogger("pairflow.stages.finalize")


def finalize_step(
    tracking_uri: str, experiment: str, workdir: str, kfp_run_id: str, status: dict[str, Any]
) -> str:
    """Record the pipeline's final state (the ExitHandler step) in the log and MLflow."""
    setup_logging()
    state = str(status.get("state", "UNKNOWN"))
    error = status.get("error") or {}
    message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
    uri = step_tracking_uri(tracking_uri, workdir)
    run_id = tracking.record_final_status(uri, experiment, kfp_run_id, state, message)
    log.info("pipeline run %s finished: %s %s (MLflow run %s)", kfp_run_id, state, message, run_id)
    return state
