"""Retrieval and zero-shot metrics over similarity matrices (pure numpy).

Pair ``i`` is image ``i`` with caption ``i``: in a similarity matrix ``sim[q, j]`` the correct
item of query ``q`` is ``j == q``. Ranks are 1-based and pessimistic on ties: an item scoring
exactly as high as the correct one counts as ranked above it, so a constant model earns no
credit. Non-finite scores are pessimistic too: a query whose correct score is NaN ranks last,
and a NaN competitor counts as ranked above the correct item (a diverged model scores 0, never
1). The gate fails any non-finite embedding before these numbers are read
(:func:`nonfinite_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.integer]


def ranks_of_matches(sim: FloatArray) -> npt.NDArray[np.int64]:
    """Rank (1 = best) of the correct item for every query of a square similarity matrix."""
    s = np.asarray(sim, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity matrix must be square, got shape {s.shape}")
    correct = np.diagonal(s)[:, None]
    # includes the correct item itself; NaN competitors count as above the correct item
    at_least = ((s >= correct) | np.isnan(s)).sum(axis=1)
    at_least[np.isnan(correct[:, 0])] = s.shape[1]
    return np.asarray(at_least, dtype=np.int64)


def nonfinite_rows(values: FloatArray) -> npt.NDArray[np.int64]:
    """Indices of the rows of ``values`` (1-D or 2-D) holding a NaN or an infinity."""
    a = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(a)
    bad = ~(finite.reshape(a.shape[0], -1).all(axis=1) if a.ndim > 1 else finite)
    return np.asarray(np.flatnonzero(bad), dtype=np.int64)


def hits_at_k(ranks: IntArray, k: int) -> npt.NDArray[np.float64]:
    """Per-query 1.0 where the correct item is in the top ``k``, else 0.0."""
    return (np.asarray(ranks) <= k).astype(np.float64)


def retrieval_metrics(
    sim: FloatArray, ks: Sequence[int], prefix: str
) -> tuple[dict[str, float], dict[str, npt.NDArray[np.float64]]]:
    """Recall@k, mean and median rank for the queries of ``sim`` (rows are queries).

    Returns (scalars, per-query vectors); names are ``{prefix}_recall_at_{k}``,
    ``{prefix}_mean_rank``, ``{prefix}_median_rank``.
    """
    ranks = ranks_of_matches(sim)
    scalars: dict[str, float] = {}
    per_query: dict[str, npt.NDArray[np.float64]] = {}
    for k in ks:
        hits = hits_at_k(ranks, k)
        name = f"{prefix}_recall_at_{k}"
        per_query[name] = hits
        scalars[name] = float(hits.mean()) if hits.size else float("nan")
    scalars[f"{prefix}_mean_rank"] = float(ranks.mean()) if ranks.size else float("nan")
    scalars[f"{prefix}_median_rank"] = float(np.median(ranks)) if ranks.size else float("nan")
    return scalars, per_query


def clip_retrieval_metrics(
    image_emb: FloatArray, text_emb: FloatArray, ks: Sequence[int]
) -> tuple[dict[str, float], dict[str, npt.NDArray[np.float64]]]:
    """Image→text (``i2t``) and text→image (``t2i``) metrics of paired embeddings."""
    img = np.asarray(image_emb, dtype=np.float32)
    txt = np.asarray(text_emb, dtype=np.float32)
    if img.shape != txt.shape:
        raise ValueError(f"image {img.shape} and text {txt.shape} embeddings differ in shape")
    sim = img @ txt.T
    i2t, i2t_q = retrieval_metrics(sim, ks, "i2t")
    t2i, t2i_q = retrieval_metrics(sim.T, ks, "t2i")
    return {**i2t, **t2i}, {**i2t_q, **t2i_q}


def zero_shot_predictions(image_emb: FloatArray, prompt_emb: FloatArray) -> IntArray:
    """Index of the most similar prompt for every image (first index on ties)."""
    logits = np.asarray(image_emb, dtype=np.float32) @ np.asarray(prompt_emb, dtype=np.float32).T
    return np.asarray(np.argmax(logits, axis=1), dtype=np.int64)
