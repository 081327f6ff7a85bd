"""Step 2: drop exact, near and caption duplicates across every validated row."""

from __future__ import annotations

import logging

from pairflow.data.schema import read_manifest
from pairflow.report import StageOutputs, StageReport, Stopwatch
from pairflow.stage_io import finish_stage, load_step_config, setup_logging, write_stage_outputs

log = logging.getLogger("pairflow.stages.dedupe")


def dedupe_step(
    config_path: str, manifest: str, outputs: StageOutputs, kfp_run_id: str = ""
) -> StageReport:
    """Drop exact, near and caption duplicates across all validated rows."""
    setup_logging()
    from pairflow.stages.dedupe.merge import dedupe_frame

    watch = Stopwatch()
    cfg = load_step_config(config_path)
    df = read_manifest(manifest)
    result = dedupe_frame(df, cfg.dedupe)
    report = write_stage_outputs("dedupe", len(df), result, outputs, watch)
    return finish_stage(report, outputs, cfg, kfp_run_id)
