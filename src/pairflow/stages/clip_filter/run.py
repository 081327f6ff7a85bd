"""The clip-filter stage over one manifest frame (one shard): load, score, select, write."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairflow.config import ClipFilterConfig, S3Config
from pairflow.data.decode import DEFAULT_MAX_PIXELS
from pairflow.data.schema import check_columns
from pairflow.errors import InputDataError
from pairflow.models.clip import LoadedClip
from pairflow.models.embeddings import (
    Embeddings,
    score_quantiles,
    summary_markdown,
    write_embeddings,
    write_histogram,
)
from pairflow.models.open import open_model
from pairflow.models.scoring import ScoreResult, score_frame
from pairflow.stages.clip_filter.select import STAGE, Selection, select_rows

log = logging.getLogger("pairflow.stages.clip_filter")

MISMATCH_KIND = "mismatched_caption"


@dataclass(frozen=True)
class FilterOutputs:
    """Where :func:`run_filter` writes its artifacts (any may be None: not written)."""

    embeddings: Path | None = None
    histogram: Path | None = None  # .html (KFP HTML artifact), .svg or .png
    summary: Path | None = None  # Markdown

    @classmethod
    def in_dir(cls, out_dir: str | Path) -> FilterOutputs:
        d = Path(out_dir)
        return cls(d / "embeddings.parquet", d / "score_histogram.html", d / "summary.md")


@dataclass
class FilterResult:
    """Kept and rejected rows (both with ``clip_score``), reject counts, metrics, artifacts."""

    kept: pd.DataFrame
    rejected: pd.DataFrame
    counts: dict[str, int]
    metrics: dict[str, Any]
    outputs: FilterOutputs = field(default_factory=FilterOutputs)


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float | None:
    """ROC-AUC of ``scores`` ranking ``positive`` rows *higher* (ties count half); None
    without both classes."""
    # lazy: sklearn (slow to import); only a run with a ground truth needs it
    from sklearn.metrics import roc_auc_score

    pos = int(positive.sum())
    if pos == 0 or pos == len(positive):
        return None
    return float(roc_auc_score(positive, scores))


def mismatch_auc(
    ids: pd.Series, scores: np.ndarray, ground_truth: str | Path
) -> tuple[float | None, int, int]:
    """ROC-AUC of low score vs the generator's ``mismatched_caption`` rows (positives).

    Negatives are rows absent from ``ground_truth`` (clean); rows with any other defect and
    unscored rows are left out. Returns (auc, positives, negatives).
    """
    path = Path(ground_truth)
    try:
        truth = pd.read_parquet(path, columns=["id", "kind"])
    except (OSError, ValueError, KeyError) as exc:
        raise InputDataError(f"{path}: unreadable ground truth ({exc})") from exc
    kinds = dict(zip(truth["id"].astype(str), truth["kind"].astype(str), strict=True))
    row_kind = [kinds.get(str(i)) for i in ids]
    use = np.isfinite(scores) & np.array([k in (None, MISMATCH_KIND) for k in row_kind])
    positive = np.array([k == MISMATCH_KIND for k in row_kind])[use]
    auc = roc_auc(-scores[use].astype(np.float64), positive)
    return auc, int(positive.sum()), int((~positive).sum())


def run_filter(
    df: pd.DataFrame,
    cfg: ClipFilterConfig,
    s3: S3Config | None = None,
    *,
    outputs: FilterOutputs | None = None,
    ground_truth: str | Path | None = None,
    model: LoadedClip | None = None,
    cache_dir: Path | None = None,
    tracking_uri: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> FilterResult:
    """Score ``df`` with the CLIP model ``cfg.model`` and keep agreeing pairs.

    The model is loaded (or ``model`` used) before any image is read, so a bad reference
    fails fast with a :class:`~pairflow.models.clip.ModelLoadError`. Rows whose image
    cannot be read or decoded are rejected with a reason; others by score (see
    :mod:`pairflow.stages.clip_filter.select`). ``rows_in == kept + rejected`` always holds.
    """
    check_columns(df, "clip_filter input")
    start = time.perf_counter()
    loaded = (
        model
        or open_model(
            cfg.model,
            variant="torch",
            s3=s3,
            device=None,
            tracking_uri=tracking_uri,
            cache_dir=cache_dir,
        ).clip
    )
    load_s = time.perf_counter() - start
    frame = df.reset_index(drop=True)
    result: ScoreResult = score_frame(frame, loaded, cfg, s3, max_pixels=max_pixels)
    sel: Selection = select_rows(frame, result.scores, result.failures, cfg)
    scored = result.scored
    quantiles = score_quantiles(result.scores)
    metrics: dict[str, Any] = {
        "mode": sel.mode,
        "threshold": cfg.threshold if sel.mode == "threshold" else None,
        "top_fraction": cfg.top_fraction if sel.mode == "top_fraction" else None,
        "cut": sel.cut,
        "source_thresholds": sel.thresholds,
        "score_quantiles": quantiles,
        "scored": int(scored.sum()),
        "unscored": int((~scored).sum()),
        "rows_per_s": round(result.rows_per_s, 1),
        "score_seconds": round(result.seconds, 3),
        "load_seconds": round(load_s, 3),
        "batch_size": cfg.batch_size,
        "workers": result.workers,
        "torch_threads": result.torch_threads,
        "device": str(loaded.device),
        "model_ref": loaded.ref,
        "model_digest": loaded.digest,
    }
    if ground_truth is not None:
        auc, pos, neg = mismatch_auc(frame["id"], result.scores, ground_truth)
        metrics.update(roc_auc=auc, auc_positives=pos, auc_negatives=neg)
    out = outputs or FilterOutputs()
    if out.embeddings is not None:
        idx = np.flatnonzero(scored)
        write_embeddings(
            out.embeddings,
            Embeddings(
                ids=[str(v) for v in frame["id"].iloc[idx]],
                image=result.image_emb[idx],
                text=result.text_emb[idx],
                scores=result.scores[idx],
                meta={"model_ref": loaded.ref, "model_digest": loaded.digest},
            ),
        )
    if out.histogram is not None:
        write_histogram(out.histogram, result.scores, sel.keep, cut=sel.cut)
    if out.summary is not None:
        out.summary.parent.mkdir(parents=True, exist_ok=True)
        out.summary.write_text(
            summary_markdown(
                rows_in=len(frame),
                kept=len(sel.kept),
                rejected=sel.counts,
                mode=sel.mode,
                cut=sel.cut,
                threshold=cfg.threshold,
                top_fraction=cfg.top_fraction,
                source_thresholds=sel.thresholds,
                quantiles=quantiles,
                model_ref=loaded.ref,
                model_digest=loaded.digest,
                rows_per_s=result.rows_per_s,
                roc_auc=metrics.get("roc_auc"),
            )
        )
    metrics["seconds"] = round(time.perf_counter() - start, 3)
    log.info(
        "%s: %d rows, kept %d, rejected %s, %.1f pairs/s",
        STAGE,
        len(frame),
        len(sel.kept),
        sel.counts,
        result.rows_per_s,
    )
    return FilterResult(sel.kept, sel.rejected, sel.counts, metrics, out)
