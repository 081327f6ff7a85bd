"""Plain-Python body of the ``compress`` pipeline step (wrapped by ``pairflow.components``).

Compress filters no rows: ``kept`` is the input manifest unchanged, ``rows_out = rows_in``.
The model output (``compressed_dir``) holds every variant and ``variants.json`` (layout in
:mod:`pairflow.models.variants`); the chosen variant is named there. The report's
``metrics.variants`` holds each variant's figures (logged to the pipeline's MLflow run as
``compress.variants.<name>.<figure>``), and ``variants.json`` / ``variants.md`` are logged
as artifacts of that run under ``compress/``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pairflow import tracking
from pairflow.config import PairflowConfig
from pairflow.data.schema import empty_rejected, read_manifest, write_manifest
from pairflow.registry.champion import champion_variant
from pairflow.report import StageOutputs, StageReport, Stopwatch
from pairflow.stage_io import finish_stage, load_step_config, setup_logging
from pairflow.stages.compress.build import CompressResult, compress_model
from pairflow.stages.compress.select import delta_name

log = logging.getLogger("pairflow.stages.compress")


def _flat_metrics(result: CompressResult) -> dict[str, Any]:
    variants: dict[str, Any] = {}
    for v in result.index.variants:
        m = v.metrics
        metric = str(m.get("metric", "recall_at_1"))
        row: dict[str, Any] = {
            k: m[k]
            for k in (
                metric,
                delta_name(metric),
                "size_bytes",
                "size_ratio",
                "params",
                "throughput_pairs_per_s",
            )
        }
        for b, lat in m["latency_ms"].items():
            row[f"p50_ms_b{b}"] = lat["p50_ms"]
            row[f"p95_ms_b{b}"] = lat["p95_ms"]
            row[f"speedup_b{b}"] = m["speedup"][b]
        variants[v.name] = row
    return {
        "chosen": result.index.chosen,
        "task": result.index.task,
        "selection": result.index.selection,
        "held_out_rows": result.held_out_rows,
        "calibration_rows": result.calibration_rows,
        "distill": result.distill or {},
        "latency_setup": result.latency_setup or {},
        "variants": variants,
    }


def _log_artifacts(cfg: PairflowConfig, kfp_run_id: str, out: Path) -> None:
    if not kfp_run_id:
        return
    run_id = tracking.find_pipeline_run(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, kfp_run_id)
    if run_id is None:
        log.warning("no MLflow run for KFP run %s; variant table not logged", kfp_run_id)
        return
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    for name in ("variants.json", "variants.md"):
        client.log_artifact(run_id, str(out / name), "compress")


def compress_step(
    config_path: str,
    manifest: str,
    model_dir: str,
    compressed_dir: str,
    outputs: StageOutputs,
    kfp_run_id: str = "",
) -> StageReport:
    """Build, measure and select the compressed variants of the trained model."""
    setup_logging()
    watch = Stopwatch()
    cfg = load_step_config(config_path)
    df = read_manifest(manifest)
    result = compress_model(
        model_dir,
        df,
        cfg.compress,
        compressed_dir,
        holdout_fraction=cfg.evaluate.holdout_fraction,
        s3=cfg.data.s3,
        seed=cfg.run.seed,
        champion=champion_variant(cfg)
        if cfg.compress.max_slowdown_vs_champion is not None
        else None,
    )
    write_manifest(df, outputs.kept)
    write_manifest(empty_rejected(list(df.columns)), outputs.rejected)
    report = StageReport(
        stage="compress",
        rows_in=len(df),
        rows_out=len(df),
        seconds=watch.seconds,
        metrics=_flat_metrics(result),
        notes=["latency measured on a possibly shared machine; variants timed interleaved"],
    )
    finish_stage(report, outputs, cfg, kfp_run_id)
    _log_artifacts(cfg, kfp_run_id, Path(compressed_dir))
    return report
