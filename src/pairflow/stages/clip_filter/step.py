"""Plain-Python bodies of the ``clip-filter`` (per shard) and ``gather-filtered`` steps.

Each shard scores its rows and writes kept/rejected manifests, its embeddings, a score
histogram and a summary. The gather step concatenates the shards, merges their embeddings
into one Parquet (what evaluate's drift report and embedding dedupe reuse), and computes the
global figures: score quantiles, and ROC-AUC against the generator's ground truth when
``data.ground_truth`` names one.

Top-fraction mode keeps each shard's top fraction. Shards are drawn by a hash of ``id``, so
this approximates the global top fraction; the threshold mode is exact under any sharding.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pairflow.config import PairflowConfig
from pairflow.data.schema import read_manifest
from pairflow.errors import ConfigError
from pairflow.metrics import ClipFilterMetrics
from pairflow.models.embeddings import (
    read_embeddings,
    score_quantiles,
    summary_markdown,
    write_histogram,
)
from pairflow.report import StageOutputs, StageReport, Stopwatch
from pairflow.sharding import select_shard
from pairflow.stage_io import (
    GatherInputs,
    ShardInputs,
    finish_stage,
    gather_shards,
    write_stage_outputs,
)
from pairflow.stages.clip_filter.run import FilterOutputs, mismatch_auc, run_filter

log = logging.getLogger("pairflow.stages.clip_filter")


@dataclass(frozen=True)
class FilterGatherInputs(GatherInputs):
    """The gather task's inputs, plus every shard's embeddings file."""

    shard_embeddings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ClipFilterOutputs:
    """The data-stage outputs (kept, rejected, report) and the filter's own artifacts
    (embeddings, score histogram, summary)."""

    data: StageOutputs
    artifacts: FilterOutputs


def _ground_truth(cfg: PairflowConfig) -> str | None:
    path = cfg.data.ground_truth
    if not path:
        return None
    if not Path(path).is_file():
        raise ConfigError(f"data.ground_truth={path!r}: no such file")
    return path


def run_shard(cfg: PairflowConfig, inputs: ShardInputs, outputs: ClipFilterOutputs) -> StageReport:
    """CLIP-score one shard and keep the pairs whose image and caption agree."""
    watch = Stopwatch()
    shard = inputs.shard
    if not cfg.clip_filter.model:
        raise ConfigError(
            "clip_filter.model is empty: set a CLIP reference (a directory, HF id, s3:// prefix "
            "or models:/NAME@ALIAS); `pairflow demo` sets its locally pretrained model"
        )
    df = select_shard(read_manifest(inputs.manifest), shard, cfg.data.shards)
    result = run_filter(
        df,
        cfg.clip_filter,
        cfg.data.s3,
        outputs=outputs.artifacts,
        ground_truth=_ground_truth(cfg),
        tracking_uri=cfg.mlflow.tracking_uri or None,
        max_pixels=cfg.validate_.max_pixels,
    )
    report = write_stage_outputs("clip_filter", len(df), result, outputs.data, watch, shard=shard)
    return finish_stage(report, outputs.data.report)


def merge_embeddings(paths: list[str], out: str | Path) -> int:
    """Concatenate shard embedding files (same format and model) into ``out``; row count."""
    tables = [pq.read_table(p) for p in paths]
    metas = {t.schema.metadata.get(b"pairflow.embeddings") for t in tables if t.schema.metadata}
    if len({m for m in metas if m}) > 1:
        raise ConfigError(f"shard embeddings disagree on model or format: {sorted(metas)!r}")
    merged = pa.concat_tables(tables)
    merged = merged.sort_by("id")
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(merged, out)
    return int(merged.num_rows)


def run(cfg: PairflowConfig, inputs: FilterGatherInputs, outputs: ClipFilterOutputs) -> StageReport:
    """Concatenate the filtered shards; global quantiles, histogram and ROC-AUC."""
    artifacts = outputs.artifacts
    merged = gather_shards("clip_filter", inputs, outputs.data)
    report = merged.report
    figures = report.metrics_as(ClipFilterMetrics)
    shard_figures = [r.metrics_as(ClipFilterMetrics) for r in merged.shard_reports]
    if artifacts.embeddings is not None:
        merge_embeddings(inputs.shard_embeddings, artifacts.embeddings)
        emb = read_embeddings(artifacts.embeddings)
        scores = emb.scores.astype(np.float64)
        kept_ids = set(merged.frame["id"].astype(str))
        kept_mask = np.array([i in kept_ids for i in emb.ids], dtype=bool)
        cuts = [float(f.cut) for f in shard_figures if f.cut is not None]
        quantiles = score_quantiles(emb.scores)
        figures.score_quantiles = dict(quantiles)
        figures.scored = len(emb.ids)
        truth = _ground_truth(cfg)
        auc = None
        if truth is not None:
            auc, pos, neg = mismatch_auc(pd.Series(emb.ids), emb.scores, truth)
            figures.roc_auc, figures.auc_positives, figures.auc_negatives = auc, pos, neg
            log.info("clip_filter: ROC-AUC %s on %d mismatched vs %d clean pairs", auc, pos, neg)
        if artifacts.histogram is not None:
            cut = cuts[0] if len(set(cuts)) == 1 else None
            write_histogram(artifacts.histogram, scores, kept_mask, cut=cut)
        if artifacts.summary is not None:
            fcfg = cfg.clip_filter
            artifacts.summary.parent.mkdir(parents=True, exist_ok=True)
            rates = [float(f.rows_per_s or 0.0) for f in shard_figures]
            artifacts.summary.write_text(
                summary_markdown(
                    rows_in=report.rows_in,
                    kept=report.rows_out,
                    rejected=report.rejected,
                    mode="top_fraction" if fcfg.top_fraction > 0 else "threshold",
                    cut=cuts[0] if len(set(cuts)) == 1 else None,
                    threshold=fcfg.threshold,
                    top_fraction=fcfg.top_fraction,
                    source_thresholds=fcfg.source_thresholds,
                    quantiles=quantiles,
                    model_ref=str(emb.meta.get("model_ref", fcfg.model)),
                    model_digest=str(emb.meta.get("model_digest", "")),
                    rows_per_s=sum(rates),
                    roc_auc=auc,
                    extra=[("shards", len(inputs.shard_reports))],
                )
            )
    report = report.model_copy(update={"metrics": figures.to_json()})
    return finish_stage(report, outputs.data.report, cfg, inputs.mlflow_run_id)
