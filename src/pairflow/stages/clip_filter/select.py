"""Keep or reject scored pairs: absolute threshold (global or per source) or top fraction.

- Threshold mode (``top_fraction == 0``): keep ``clip_score >= threshold``, where the
  threshold is ``source_thresholds[row.source]`` when the row's source is listed, else
  ``threshold``.
- Top-fraction mode (``0 < top_fraction < 1``, DataComp-style): keep the
  ``ceil(top_fraction * n_scored)`` best-scoring rows of this frame (per shard in the
  pipeline); ties are broken by ``id`` (ascending), so the choice is deterministic. Thresholds
  (global and per source) are not used in this mode.

Rows that could not be scored (the image did not read or decode) are rejected with their
failure reason; the rest of the rejected rows get :data:`REASON_BELOW`. Kept and rejected rows
both carry a ``clip_score`` column (NaN for unscored rows); both keep the input's row order.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pairflow.config import ClipFilterConfig
from pairflow.data.schema import rejected_frame
from pairflow.models.batches import Failure

STAGE = "clip_filter"
SCORE_COLUMN = "clip_score"
REASON_BELOW = "clip_score_below_threshold"


@dataclass
class Selection:
    """Kept and rejected rows (both with ``clip_score``), counts by reason, what decided."""

    kept: pd.DataFrame
    rejected: pd.DataFrame
    counts: dict[str, int]
    mode: str  # "threshold" | "top_fraction"
    cut: float | None  # lowest kept score (top fraction) or the global threshold
    keep: np.ndarray  # positional bool mask over the input rows
    thresholds: dict[str, float] = field(default_factory=dict)  # per source actually used


def select_rows(
    df: pd.DataFrame,
    scores: np.ndarray,
    failures: Mapping[int, Failure],
    cfg: ClipFilterConfig,
) -> Selection:
    """Split ``df`` (positional rows matching ``scores``) into kept and rejected frames."""
    n = len(df)
    if scores.shape != (n,):
        raise ValueError(f"scores has shape {scores.shape}, expected ({n},)")
    frame = df.reset_index(drop=True).copy()
    frame[SCORE_COLUMN] = scores.astype(np.float64)
    scored = np.isfinite(scores)
    for pos in failures:
        scored[pos] = False
    keep = np.zeros(n, dtype=bool)
    details: dict[int, str] = {}
    used: dict[str, float] = {}
    positions = [int(p) for p in np.flatnonzero(scored)]
    if cfg.top_fraction > 0:
        mode = "top_fraction"
        k = math.ceil(cfg.top_fraction * len(positions))
        ids = frame["id"].astype(str).tolist()
        # best score first, then smallest id: deterministic whatever the input order
        order = sorted(positions, key=lambda p: (-float(scores[p]), ids[p]))
        keep[order[:k]] = True
        cut = float(scores[order[k - 1]]) if k > 0 else None
        for rank, pos in enumerate(order[k:], start=k + 1):
            details[pos] = (
                f"clip_score {scores[pos]:.4f} ranks {rank}/{len(order)}; keeping top "
                f"{cfg.top_fraction:.1%} (cut {cut if cut is not None else float('nan'):.4f})"
            )
    else:
        mode = "threshold"
        cut = cfg.threshold
        sources = frame["source"].tolist() if "source" in frame.columns else [None] * n
        for pos in positions:
            src = None if sources[pos] is None else str(sources[pos])
            per_source = src is not None and src in cfg.source_thresholds
            thr = cfg.source_thresholds[src] if src is not None and per_source else cfg.threshold
            if src is not None and per_source:
                used[src] = thr
            if scores[pos] >= thr:
                keep[pos] = True
            else:
                where = f" for source {src}" if per_source else ""
                details[pos] = f"clip_score {scores[pos]:.4f} < threshold {thr:.4f}{where}"
    reasons: list[str] = []
    texts: list[str] = []
    rejected_pos = [int(p) for p in np.flatnonzero(~keep)]
    for pos in rejected_pos:
        failure = failures.get(pos)
        if failure is not None:
            reasons.append(failure.reason)
            texts.append(failure.detail)
        else:
            reasons.append(REASON_BELOW)
            texts.append(details.get(pos, "not scored"))
    kept = frame[keep].reset_index(drop=True)
    rejected = rejected_frame(frame.iloc[rejected_pos], reasons, texts, stage=STAGE)
    return Selection(
        kept=kept,
        rejected=rejected,
        counts=dict(Counter(reasons)),
        mode=mode,
        cut=cut,
        keep=keep,
        thresholds=used,
    )
