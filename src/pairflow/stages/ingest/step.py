"""Step 1a: read the configured source into a manifest of image-caption pairs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pairflow.config import PairflowConfig
from pairflow.report import StageOutputs
from pairflow.stage_io import finish_stage
from pairflow.stages.ingest.ingest import run_ingest

log = logging.getLogger("pairflow.stages.ingest")


@dataclass(frozen=True)
class IngestInputs:
    """Ingest reads ``data.source`` from the config; it only needs the run to log to."""

    mlflow_run_id: str = ""


def run(cfg: PairflowConfig, inputs: IngestInputs, outputs: StageOutputs) -> list[int]:
    """Read the configured source into a manifest; return the shard ids to fan out over."""
    report = run_ingest(cfg.data.source, outputs, cfg.data)
    finish_stage(report, outputs.report, cfg, inputs.mlflow_run_id)
    return list(range(cfg.data.shards))
