"""The ``compress`` step: :func:`run`, called by ``pairflow.components.compress`` and by
``pairflow compress``.

Compress is a model stage: it outputs the compressed model and a report, no manifest
(``rows_in`` = ``rows_out`` counts the rows read). The model output (``outputs.compressed``)
holds every variant and ``variants.json`` (layout in :mod:`pairflow.models.variants`); the
chosen variant is named there. The report's
``metrics.variants`` holds each variant's figures (logged to the pipeline's MLflow run as
``compress.variants.<name>.<figure>``), and ``variants.json`` / ``variants.md`` are logged
as artifacts of that run under ``compress/``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairflow.config import PairflowConfig
from pairflow.data.schema import read_manifest
from pairflow.metrics import CompressMetrics, Selection, VariantFigures
from pairflow.models.formats import INDEX_FILE, TABLE_FILE
from pairflow.registry.champion import champion_variant
from pairflow.report import StageReport, Stopwatch
from pairflow.stage_io import finish_stage
from pairflow.stages.compress.build import CompressResult, compress_model
from pairflow.stages.compress.select import delta_name

log = logging.getLogger("pairflow.stages.compress")


@dataclass(frozen=True)
class CompressInputs:
    """The trained model, the curated manifest (held-out rows measure the variants) and
    the pipeline's MLflow run the variant table is logged to (empty standalone)."""

    manifest: str
    model: str
    mlflow_run_id: str = ""


@dataclass(frozen=True)
class CompressOutputs:
    """The compressed model directory (every variant, ``variants.json``) and the report."""

    compressed: Path
    report: Path

    @classmethod
    def in_dir(cls, out_dir: str | Path) -> CompressOutputs:
        d = Path(out_dir)
        return cls(compressed=d / "compressed", report=d / "report.json")


def _flat_metrics(result: CompressResult) -> CompressMetrics:
    variants: dict[str, VariantFigures] = {}
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
        variants[v.name] = VariantFigures.model_validate(row)  # per-batch keys: extra
    return CompressMetrics(
        chosen=result.index.chosen,
        task=result.index.task,
        selection=Selection.model_validate(result.index.selection),
        held_out_rows=result.held_out_rows,
        calibration_rows=result.calibration_rows,
        distill=result.distill or {},
        latency_setup=result.latency_setup or {},
        variants=variants,
    )


def _log_artifacts(cfg: PairflowConfig, run_id: str, out: Path) -> None:
    if not run_id:
        return
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    for name in (INDEX_FILE, TABLE_FILE):
        client.log_artifact(run_id, str(out / name), "compress")


def run(
    cfg: PairflowConfig,
    inputs: CompressInputs,
    outputs: CompressOutputs,
    *,
    progress: Callable[[str], None] | None = None,
) -> StageReport:
    """Build, measure and select the compressed variants of the trained model."""
    watch = Stopwatch()
    df = read_manifest(inputs.manifest)
    result = compress_model(
        inputs.model,
        df,
        cfg.compress,
        outputs.compressed,
        split=cfg.data.split,
        s3=cfg.data.s3,
        seed=cfg.run.seed,
        champion=champion_variant(cfg)
        if cfg.compress.max_slowdown_vs_champion is not None
        else None,
        progress=progress,
    )
    report = StageReport(
        stage="compress",
        rows_in=len(df),
        rows_out=len(df),
        seconds=watch.seconds,
        metrics=_flat_metrics(result).to_json(),
        notes=["latency measured on a possibly shared machine; variants timed interleaved"],
    )
    finish_stage(report, outputs.report, cfg, inputs.mlflow_run_id)
    _log_artifacts(cfg, inputs.mlflow_run_id, Path(outputs.compressed))
    return report
