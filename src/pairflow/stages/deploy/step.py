"""The ``deploy`` step: :func:`run`, called by ``pairflow.components.deploy`` and by
``pairflow deploy``.

Deploy is a model stage: it outputs its decision (promoted / rolled back) in a report and a
Markdown summary, no manifest (``rows_in`` = ``rows_out`` counts the rows of the manifest
whose held-out rows it replays).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pairflow.config import PairflowConfig
from pairflow.data.schema import read_manifest
from pairflow.metrics import DeployMetrics
from pairflow.report import StageReport, Stopwatch
from pairflow.stage_io import finish_stage
from pairflow.stages.deploy.controller import StepRecord
from pairflow.stages.deploy.run import run_deploy
from pairflow.stages.deploy.summary import deploy_markdown

log = logging.getLogger("pairflow.stages.deploy.step")


@dataclass(frozen=True)
class DeployInputs:
    """The registered candidate (``models:/NAME/VERSION``), the manifest whose held-out rows
    are replayed, the KFP run (tagged on the decision) and the pipeline's MLflow run the
    report is logged to (both empty standalone)."""

    manifest: str
    model_uri: str
    kfp_run_id: str = ""
    mlflow_run_id: str = ""


@dataclass(frozen=True)
class DeployOutputs:
    """The report and the Markdown summary (its step-by-step decision); the replay logs go
    to ``deploy-logs/`` beside the report."""

    report: Path
    summary: Path | None = None

    @classmethod
    def in_dir(cls, out_dir: str | Path) -> DeployOutputs:
        d = Path(out_dir)
        return cls(report=d / "report.json", summary=d / "summary.md")


def run(
    cfg: PairflowConfig,
    inputs: DeployInputs,
    outputs: DeployOutputs,
    *,
    on_step: Callable[[StepRecord], None] | None = None,
) -> StageReport:
    """Canary-deploy the registered version against the champion; promote or roll back.

    The report's metrics hold every step's samples, statistics, p-values and the decision;
    ``on_step`` sees each canary step as it ends.
    """

    watch = Stopwatch()
    rows = len(read_manifest(inputs.manifest))
    work_dir = Path(outputs.report).parent / "deploy-logs"
    outcome = run_deploy(
        cfg,
        inputs.manifest,
        inputs.model_uri,
        work_dir,
        kfp_run_id=inputs.kfp_run_id,
        on_step=on_step or _log_step,
    )
    report = StageReport(
        stage="deploy",
        rows_in=rows,
        rows_out=rows,
        seconds=watch.seconds,
        metrics=(
            DeployMetrics.model_validate(outcome.metrics)
            if outcome.metrics
            else DeployMetrics(decision=outcome.decision, reasons=outcome.reasons)
        ).to_json(),
        notes=[f"{outcome.decision}: {r}" for r in outcome.reasons],
    )
    finish_stage(report, outputs.report, cfg, inputs.mlflow_run_id)
    if outputs.summary is not None:
        outputs.summary.parent.mkdir(parents=True, exist_ok=True)
        outputs.summary.write_text(deploy_markdown(report))
    return report


def _log_step(rec: StepRecord) -> None:
    data = rec.to_json()
    log.info("canary step %d%%: %s", rec.weight, json.dumps(data, sort_keys=True))
