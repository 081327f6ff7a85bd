"""Step 2: drop exact, near and caption duplicates across every validated row."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pairflow.config import PairflowConfig
from pairflow.data.schema import read_manifest
from pairflow.report import StageOutputs, StageReport, Stopwatch
from pairflow.stage_io import finish_stage, write_stage_outputs

log = logging.getLogger("pairflow.stages.dedupe")


@dataclass(frozen=True)
class DedupeInputs:
    """The data contract's merged manifest (validated rows with their image signatures)."""

    manifest: str
    mlflow_run_id: str = ""


def run(cfg: PairflowConfig, inputs: DedupeInputs, outputs: StageOutputs) -> StageReport:
    """Drop exact, near and caption duplicates across all validated rows."""
    # lazy: datasketch, scipy (slow to import); only this path needs it
    from pairflow.stages.dedupe.merge import dedupe_frame

    watch = Stopwatch()
    df = read_manifest(inputs.manifest)
    result = dedupe_frame(df, cfg.dedupe)
    report = write_stage_outputs("dedupe", len(df), result, outputs, watch)
    return finish_stage(report, outputs.report, cfg, inputs.mlflow_run_id)
