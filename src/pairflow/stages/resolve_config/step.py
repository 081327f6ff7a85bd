"""Step 0: apply the run's parameters to the compiled-in config and open its MLflow run."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairflow import tracking
from pairflow.config import PairflowConfig, apply_pipeline_params
from pairflow.stage_io import resolve_step_mlflow

log = logging.getLogger("pairflow.stages.resolve_config")


@dataclass(frozen=True)
class ResolveInputs:
    """The run's UI parameters and its KFP run id and name."""

    params: dict[str, Any]
    kfp_run_id: str
    kfp_run_name: str = ""


@dataclass(frozen=True)
class ResolveOutputs:
    """Where the resolved ``config.json`` goes (every later step's ``config`` input)."""

    config: Path


@dataclass(frozen=True)
class Resolved:
    """The config's hash and the MLflow run that records this pipeline run (later steps log
    to it by this id)."""

    config_hash: str
    mlflow_run_id: str


def run(cfg: PairflowConfig, inputs: ResolveInputs, outputs: ResolveOutputs) -> Resolved:
    """Apply the UI parameters to ``cfg`` (the compiled-in defaults), validate, write
    config.json, and open the MLflow run that records this pipeline run."""
    resolved = apply_pipeline_params(cfg, inputs.params)
    resolved = resolve_step_mlflow(resolved)
    outputs.config.parent.mkdir(parents=True, exist_ok=True)
    outputs.config.write_text(json.dumps(resolved.to_dict(), indent=2, sort_keys=True))
    run_id = tracking.start_pipeline_run(resolved, inputs.kfp_run_id, inputs.kfp_run_name)
    log.info(
        "config %s resolved; MLflow run %s at %s",
        resolved.digest()[:12],
        run_id,
        tracking.redact_uri(resolved.mlflow.tracking_uri),
    )
    return Resolved(config_hash=resolved.digest(), mlflow_run_id=run_id)
