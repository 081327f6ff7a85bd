"""Plain-Python body of the ``deploy`` pipeline step (wrapped by ``pairflow.components``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from pairflow.report import StageOutputs, StageReport, Stopwatch
from pairflow.stage_io import finish_stage, load_step_config, setup_logging
from pairflow.stages.deploy.controller import StepRecord

log = logging.getLogger("pairflow.stages.deploy.step")


def deploy_step(
    config_path: str,
    manifest: str,
    model_uri: str,
    outputs: StageOutputs,
    kfp_run_id: str = "",
    *,
    summary_path: str | None = None,
    on_step: Callable[[StepRecord], None] | None = None,
) -> StageReport:
    """Canary-deploy the registered version against the champion; promote or roll back.

    Deploy filters nothing: ``kept`` is the input manifest (rows_out = rows_in). The
    report's metrics hold every step's samples, statistics, p-values and the decision.
    """
    from pairflow.data.schema import empty_rejected, read_manifest, write_manifest
    from pairflow.stages.deploy.run import run_deploy
    from pairflow.stages.deploy.summary import deploy_markdown

    setup_logging()
    watch = Stopwatch()
    cfg = load_step_config(config_path)
    df = read_manifest(manifest)
    work_dir = Path(outputs.report).parent / "deploy-logs"
    outcome = run_deploy(
        cfg, manifest, model_uri, work_dir, kfp_run_id=kfp_run_id, on_step=on_step or _log_step
    )
    write_manifest(df, outputs.kept)
    write_manifest(empty_rejected(list(df.columns)), outputs.rejected)
    report = StageReport(
        stage="deploy",
        rows_in=len(df),
        rows_out=len(df),
        seconds=watch.seconds,
        metrics=outcome.metrics or {"decision": outcome.decision, "reasons": outcome.reasons},
        notes=[f"{outcome.decision}: {r}" for r in outcome.reasons],
    )
    finish_stage(report, outputs, cfg, kfp_run_id)
    if summary_path is not None:
        Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
        Path(summary_path).write_text(deploy_markdown(report))
    return report


def _log_step(rec: StepRecord) -> None:
    data = rec.to_json()
    log.info("canary step %d%%: %s", rec.weight, json.dumps(data, sort_keys=True))
