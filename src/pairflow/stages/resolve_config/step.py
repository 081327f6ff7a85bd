"""Step 0: apply the run's parameters to the compiled-in config and open its MLflow run."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pairflow import tracking
from pairflow.config import apply_pipeline_params, config_from_dict
from pairflow.stage_io import redact, setup_logging, step_tracking_uri

log = logging.getLogger("pairflow.stages.resolve_config")


def resolve_config_step(
    defaults_json: str,
    params: dict[str, Any],
    kfp_run_id: str,
    kfp_run_name: str,
    config_out: str | Path,
) -> str:
    """Apply UI parameters to the compiled-in defaults, validate, write config.json.

    Also opens the MLflow run that records this pipeline run. Returns the config hash.
    """
    setup_logging()
    base = config_from_dict(json.loads(defaults_json), "compiled config")
    cfg = apply_pipeline_params(base, params)
    cfg.mlflow.tracking_uri = step_tracking_uri(cfg.mlflow.tracking_uri, cfg.run.workdir)
    Path(config_out).parent.mkdir(parents=True, exist_ok=True)
    Path(config_out).write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    run_id = tracking.start_pipeline_run(cfg, kfp_run_id, kfp_run_name)
    log.info(
        "config %s resolved; MLflow run %s at %s",
        cfg.digest()[:12],
        run_id,
        redact(cfg.mlflow.tracking_uri),
    )
    return cfg.digest()
