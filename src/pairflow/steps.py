"""Plain-Python bodies of the pipeline steps; ``pairflow.components`` wraps them for KFP.

Every function takes file paths and plain values, so it runs the same in a KFP container, in
``kfp.local`` and in a test. Steps whose issue has not landed pass rows through unchanged and
say ``implemented: false`` in their report and log: they never fake results.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import pandas as pd

from pairflow import tracking
from pairflow.config import (
    PairflowConfig,
    apply_pipeline_params,
    config_from_dict,
    config_from_json,
)
from pairflow.data.schema import empty_rejected, read_manifest, write_manifest
from pairflow.errors import ConservationError
from pairflow.report import StageOutputs, StageReport, Stopwatch, merge_reports
from pairflow.sharding import select_shard

log = logging.getLogger("pairflow.steps")


def setup_logging() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")


def load_step_config(path: str | Path) -> PairflowConfig:
    return config_from_json(Path(path).read_text())


def finish_stage(
    report: StageReport,
    outputs: StageOutputs,
    cfg: PairflowConfig | None = None,
    kfp_run_id: str = "",
) -> StageReport:
    report.write(outputs.report)
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
    if cfg is not None and kfp_run_id:
        tracking.log_stage_report(cfg, kfp_run_id, report)
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
    cfg.mlflow.tracking_uri = _step_tracking_uri(cfg.mlflow.tracking_uri, cfg.run.workdir)
    Path(config_out).parent.mkdir(parents=True, exist_ok=True)
    Path(config_out).write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    run_id = tracking.start_pipeline_run(cfg, kfp_run_id, kfp_run_name)
    log.info(
        "config %s resolved; MLflow run %s at %s",
        cfg.digest()[:12],
        run_id,
        _redact(cfg.mlflow.tracking_uri),
    )
    return cfg.digest()


def _step_tracking_uri(configured: str, workdir: str) -> str:
    """The tracking URI; when there is none in a KFP pod, exit at once with one line."""
    try:
        return tracking.resolve_tracking_uri(configured, workdir)
    except tracking.TrackingConfigError as exc:
        raise SystemExit(f"pairflow: {exc}") from None


def _redact(uri: str) -> str:
    """Drop credentials from a URI before it reaches a log."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def ingest_step(config_path: str, outputs: StageOutputs, kfp_run_id: str = "") -> list[int]:
    """Read the configured source into a manifest; return the shard ids to fan out over."""
    setup_logging()
    from pairflow.data.ingest import run_ingest

    cfg = load_step_config(config_path)
    report = run_ingest(cfg.data.source, outputs, cfg.data)
    finish_stage(report, outputs, cfg, kfp_run_id)
    return list(range(cfg.data.shards))


# ---------------------------------------------------------------------------------------------
# sharded data stages and their merges


def validate_shard_step(
    config_path: str, manifest: str, shard: int, outputs: StageOutputs
) -> StageReport:
    """Validate one shard of the ingested manifest: per-row checks, images decoded once."""
    setup_logging()
    from pairflow.validate.rows import validate_frame

    watch = Stopwatch()
    cfg = load_step_config(config_path)
    df = select_shard(read_manifest(manifest), shard, cfg.data.shards)
    log.info("validate shard %d/%d: %d rows", shard, cfg.data.shards, len(df))
    result = validate_frame(df, cfg.validate_, cfg.data.s3, progress=_log_progress("validate"))
    report = write_stage_outputs("validate", len(df), result, outputs, watch, shard=shard)
    return finish_stage(report, outputs)


def _log_progress(stage: str, every: int = 10_000) -> Callable[[int, int], None]:
    state = {"next": every}

    def report(done: int, total: int) -> None:
        if done >= state["next"] or done == total:
            log.info("%s: %d/%d rows", stage, done, total)
            state["next"] = done + every

    return report


def contract_step(
    config_path: str,
    shard_manifests: list[str],
    shard_rejected: list[str],
    shard_reports: list[str],
    upstream_report: str,
    outputs: StageOutputs,
    docs_html: str,
    docs_site: str,
    kfp_run_id: str = "",
) -> StageReport:
    """Merge the validated shards and check the dataset-level data contract (GX).

    Writes the merged validate report (the contract's outcomes in its metrics), a one-file
    HTML page of the outcomes (``docs_html``) and GX's Data Docs site (``docs_site``, a
    directory); a failed critical expectation fails the step.
    """
    setup_logging()
    from pairflow.validate.contract import ContractError, run_contract

    cfg = load_step_config(config_path)
    merged = merge_shards(
        "validate", shard_manifests, shard_reports, upstream_report, rejected=shard_rejected
    )
    write_manifest(merged.frame, outputs.kept)
    write_manifest(merged.rejected, outputs.rejected)
    docs_dir = Path(docs_site)
    result = run_contract(
        merged.frame, merged.rejected, cfg.validate_, docs_dir, raise_on_failure=False
    )
    log.info("%s (%d expectations; docs in %s)", result.message(), len(result.outcomes), docs_dir)
    Path(docs_html).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.html, docs_html)
    report = merged.report.model_copy(
        update={"metrics": {**merged.report.metrics, "contract": result.to_json_dict()}}
    )
    finish_stage(report, outputs, cfg, kfp_run_id)
    if not result.passed:
        raise ContractError(result.message(), result)
    return report


def dedupe_step(
    config_path: str, manifest: str, outputs: StageOutputs, kfp_run_id: str = ""
) -> StageReport:
    """Drop exact, near and caption duplicates across all validated rows."""
    setup_logging()
    from pairflow.dedupe.merge import dedupe_frame

    watch = Stopwatch()
    cfg = load_step_config(config_path)
    df = read_manifest(manifest)
    result = dedupe_frame(df, cfg.dedupe)
    report = write_stage_outputs("dedupe", len(df), result, outputs, watch)
    return finish_stage(report, outputs, cfg, kfp_run_id)


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


def _concat_sorted(frames: list[pd.DataFrame]) -> pd.DataFrame:
    nonempty = [f for f in frames if len(f)]
    if not nonempty:
        return frames[0] if frames else empty_rejected()
    out = pd.concat(nonempty, ignore_index=True)
    return out.sort_values("id", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------------------------------------
# exit handler


def finalize_step(
    tracking_uri: str, experiment: str, workdir: str, kfp_run_id: str, status: dict[str, Any]
) -> str:
    """Record the pipeline's final state (the ExitHandler step) in the log and MLflow."""
    setup_logging()
    state = str(status.get("state", "UNKNOWN"))
    error = status.get("error") or {}
    message = str(error.get("message", "")) if isinstance(error, dict) else str(error)
    uri = _step_tracking_uri(tracking_uri, workdir)
    run_id = tracking.record_final_status(uri, experiment, kfp_run_id, state, message)
    log.info("pipeline run %s finished: %s %s (MLflow run %s)", kfp_run_id, state, message, run_id)
    return state


def write_step_summary(outputs: StageOutputs, summary_path: str | Path) -> dict[str, Any]:
    """Write the stage's Markdown summary; return artifact metadata for the KFP UI."""
    from pairflow.summary import report_markdown

    rep = StageReport.read(outputs.report)
    Path(summary_path).parent.mkdir(parents=True, exist_ok=True)
    Path(summary_path).write_text(report_markdown(rep))
    return {
        "rows_in": rep.rows_in,
        "rows_out": rep.rows_out,
        "rows_rejected": rep.rows_rejected,
        "implemented": rep.implemented,
    }
