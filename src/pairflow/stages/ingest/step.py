"""Step 1a: read the configured source into a manifest of image-caption pairs."""

from __future__ import annotations

import logging

from pairflow.report import StageOutputs
from pairflow.stage_io import finish_stage, load_step_config, setup_logging
from pairflow.stages.ingest.ingest import run_ingest

log = logging.getLogger("pairflow.stages.ingest")


def ingest_step(config_path: str, outputs: StageOutputs, kfp_run_id: str = "") -> list[int]:
    """Read the configured source into a manifest; return the shard ids to fan out over."""
    setup_logging()

    cfg = load_step_config(config_path)
    report = run_ingest(cfg.data.source, outputs, cfg.data)
    finish_stage(report, outputs, cfg, kfp_run_id)
    return list(range(cfg.data.shards))
