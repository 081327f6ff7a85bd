"""Helpers shared by the stages' steps (``pairflow.stages.<name>.step.run``).

A component loads the run's config (:func:`load_step_config`), builds its stage's typed
inputs and outputs and calls ``run(cfg, inputs, outputs)``; a stage CLI calls the same ``run``
with a config it loaded itself. Every report goes through :func:`finish_stage`: written,
checked and, given the pipeline's MLflow run id (resolve-config's output), logged to that run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from pairflow import tracking
from pairflow.config import (
    PairflowConfig,
    config_from_dict,
    config_from_json,
)
from pairflow.data.schema import empty_rejected, read_manifest, write_manifest
from pairflow.errors import ConservationError
from pairflow.report import StageOutputs, StageReport, Stopwatch, merge_reports
from pairflow.summary import report_markdown

log = logging.getLogger("pairflow.stage_io")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def load_step_config(path: str | Path) -> PairflowConfig:
    """The run's config artifact (``config.json``), with the step's logging set up: what a
    component hands to its stage's ``run``."""
    setup_logging()
    cfg = config_from_json(Path(path).read_text())
    tracking.apply_http_policy(cfg.mlflow)  # its tracking URI was resolved by resolve-config
    return cfg


def compiled_config(defaults_json: str) -> PairflowConfig:
    """The config compiled into a pipeline (before the run's UI parameters apply)."""
    setup_logging()
    return config_from_dict(json.loads(defaults_json), "compiled config")


def finish_stage(
    report: StageReport,
    report_path: str | Path,
    cfg: PairflowConfig | None = None,
    mlflow_run_id: str = "",
) -> StageReport:
    """Write (and check) ``report``; log it to the pipeline's MLflow run when one is given."""
    report.write(report_path)
    if not report.implemented:
        log.warning("stage %s is NOT IMPLEMENTED yet: rows passed through unchanged", report.stage)
    log.info(
        "stage=%s rows_in=%d rows_out=%d rejected=%s seconds=%.2f implemented=%s",
        report.stage,
        report.rows_in,
        report.rows_out,
        report.rejected,
        report.seconds,
        report.implemented,
    )
    if cfg is not None and mlflow_run_id:
        tracking.log_stage_report(cfg, mlflow_run_id, report)
    return report


class StageResult(Protocol):
    kept: pd.DataFrame
    rejected: pd.DataFrame
    counts: dict[str, int]
    metrics: dict[str, Any]


def write_stage_outputs(
    stage: str,
    rows_in: int,
    result: StageResult,
    outputs: StageOutputs,
    watch: Stopwatch,
    *,
    shard: int | None = None,
) -> StageReport:
    """Write a stage's kept/rejected manifests; its report (not yet written or checked)."""
    write_manifest(result.kept, outputs.kept)
    write_manifest(result.rejected, outputs.rejected)
    return StageReport(
        stage=stage,
        rows_in=rows_in,
        rows_out=len(result.kept),
        rejected=result.counts,
        seconds=watch.seconds,
        shard=shard,
        metrics=result.metrics,
    )


# ---------------------------------------------------------------------------------------------
# config and ingest


def step_tracking_uri(configured: str, workdir: str) -> str:
    """The tracking URI; when there is none in a KFP pod, exit at once with one line."""
    try:
        return tracking.resolve_tracking_uri(configured, workdir)
    except tracking.TrackingConfigError as exc:
        raise SystemExit(f"pairflow: {exc}") from None


def resolve_step_mlflow(cfg: PairflowConfig) -> PairflowConfig:
    """:func:`pairflow.tracking.resolve_mlflow_settings` for the step that resolves a run's
    config (resolve-config, the monitor pass): with no tracking URI in a KFP pod, exit at once
    with one line (:func:`step_tracking_uri`)."""
    cfg.mlflow.tracking_uri = step_tracking_uri(cfg.mlflow.tracking_uri, cfg.run.workdir)
    return tracking.resolve_mlflow_settings(cfg)


# ---------------------------------------------------------------------------------------------
# sharded data stages and their merges


def log_progress(stage: str, every: int = 10_000) -> Callable[[int, int], None]:
    state = {"next": every}

    def report(done: int, total: int) -> None:
        if done >= state["next"] or done == total:
            log.info("%s: %d/%d rows", stage, done, total)
            state["next"] = done + every

    return report


@dataclass(frozen=True)
class ShardInputs:
    """One task of a sharded data stage: the upstream manifest and the shard of it to run on."""

    manifest: str
    shard: int


@dataclass(frozen=True)
class GatherInputs:
    """The task after a sharded stage: every shard's outputs and the upstream stage's report
    (the shards together must have seen every row it produced)."""

    shard_manifests: list[str]
    shard_rejected: list[str]
    shard_reports: list[str]
    upstream_report: str
    mlflow_run_id: str = ""


class MergedShards:
    """Shard outputs of one stage concatenated (sorted by id), and their reports summed."""

    def __init__(
        self,
        frame: pd.DataFrame,
        rejected: pd.DataFrame,
        report: StageReport,
        shard_reports: list[StageReport],
    ) -> None:
        self.frame = frame
        self.rejected = rejected
        self.report = report
        self.shard_reports = shard_reports


def merge_shards(
    stage: str,
    manifests: list[str],
    reports: list[str],
    upstream_report: str,
    *,
    rejected: list[str] | None = None,
) -> MergedShards:
    """Concatenate shard outputs; fail unless the shards together saw every upstream row."""
    shard_reports = [StageReport.read(p) for p in reports]
    report = merge_reports(stage, shard_reports)
    upstream = StageReport.read(upstream_report)
    if report.rows_in != upstream.rows_out:
        raise ConservationError(
            f"stage {stage!r}: shards saw {report.rows_in} rows but upstream stage "
            f"{upstream.stage!r} produced {upstream.rows_out}"
        )
    frame = _concat_sorted([read_manifest(p) for p in manifests])
    if len(frame) != report.rows_out:
        raise ConservationError(
            f"stage {stage!r}: shard manifests hold {len(frame)} rows, reports say "
            f"{report.rows_out}"
        )
    rejects = _concat_sorted([pd.read_parquet(p) for p in rejected or []])
    if rejected is not None and len(rejects) != report.rows_rejected:
        raise ConservationError(
            f"stage {stage!r}: shard rejects hold {len(rejects)} rows, reports say "
            f"{report.rows_rejected}"
        )
    return MergedShards(frame, rejects, report, shard_reports)


def gather_shards(stage: str, inputs: GatherInputs, outputs: StageOutputs) -> MergedShards:
    """Merge a sharded stage's outputs (checked against the upstream report) and write the
    merged kept/rejected manifests; the merged report is returned, not yet written."""
    merged = merge_shards(
        stage,
        inputs.shard_manifests,
        inputs.shard_reports,
        inputs.upstream_report,
        rejected=inputs.shard_rejected,
    )
    write_manifest(merged.frame, outputs.kept)
    write_manifest(merged.rejected, outputs.rejected)
    return merged


def _concat_sorted(frames: list[pd.DataFrame]) -> pd.DataFrame:
    nonempty = [f for f in frames if len(f)]
    if not nonempty:
        return frames[0] if frames else empty_rejected()
    out = pd.concat(nonempty, ignore_index=True)
    return out.sort_values("id", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# exit handler


def write_step_summary(report_path: str | Path, summary_path: str | Path) -> dict[str, Any]:
    """Write the stage's Markdown summary; return artifact metadata for the KFP UI."""

    rep = StageReport.read(report_path)
    Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
    Path(summary_path).write_text(report_markdown(rep))
    return {
        "rows_in": rep.rows_in,
        "rows_out": rep.rows_out,
        "rows_rejected": rep.rows_rejected,
        "implemented": rep.implemented,
    }
