"""SemDeDup-style semantic dedupe on (CLIP) embeddings.

Embeddings are L2-normalised and clustered with spherical k-means (deterministic k-means++
seeding). Inside each cluster rows are visited in priority order (callers pass the
survivor rank); a row is dropped when its cosine similarity to an already kept row of the
same cluster exceeds ``1 - epsilon``, and it records the most similar such kept row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["SemanticResult", "kmeans", "semantic_duplicates"]

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
_SEED = 0
_ITERATIONS = 25
_BLOCK_ELEMENTS = 1 << 23  # similarity entries materialised at once (32 MB of float32)


@dataclass(frozen=True)
class SemanticResult:
    """Dropped rows (positions), the kept row each duplicates, and their cosine."""

    dropped: IntArray
    duplicate_of: IntArray
    cosine: FloatArray
    clusters: int
    pairs_above: int


def _normalise(x: npt.NDArray[np.floating]) -> FloatArray:
    arr = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    out: FloatArray = np.divide(arr, norms, out=np.zeros_like(arr), where=norms > 0)
    return out


def kmeans(x: FloatArray, k: int, seed: int = _SEED, iterations: int = _ITERATIONS) -> IntArray:
    """Spherical k-means labels of unit rows ``x`` (k-means++ seeding, fixed seed)."""
    n = len(x)
    k = max(1, min(k, n))
    rng = np.random.default_rng(seed)
    centres = np.empty((k, x.shape[1]), dtype=np.float32)
    centres[0] = x[int(rng.integers(n))]
    closest = np.maximum(1.0 - x @ centres[0], 0.0)
    for c in range(1, k):
        total = float(closest.sum())
        pick = int(rng.choice(n, p=closest / total)) if total > 0 else int(rng.integers(n))
        centres[c] = x[pick]
        closest = np.minimum(closest, np.maximum(1.0 - x @ centres[c], 0.0))
    labels = np.zeros(n, dtype=np.int64)
    for _ in range(iterations):
        new = np.argmax(x @ centres.T, axis=1).astype(np.int64)
        if _ > 0 and np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            members = x[labels == c]
            if len(members):
                mean = members.sum(axis=0)
                norm = float(np.linalg.norm(mean))
                if norm > 0:
                    centres[c] = mean / norm
    return labels


def _cluster_edges(e: FloatArray, threshold: float) -> tuple[IntArray, IntArray, FloatArray]:
    """Pairs ``(i, j)`` with ``j < i`` and cosine > ``threshold`` among rows of ``e``."""
    n = len(e)
    block = max(1, _BLOCK_ELEMENTS // max(n, 1))
    rows: list[IntArray] = []
    cols: list[IntArray] = []
    sims: list[FloatArray] = []
    for start in range(0, n, block):
        stop = min(n, start + block)
        s = e[start:stop] @ e[:stop].T
        i, j = np.nonzero(s > threshold)
        i = i + start
        earlier = j < i
        rows.append(i[earlier].astype(np.int64))
        cols.append(j[earlier].astype(np.int64))
        sims.append(s[i[earlier] - start, j[earlier]].astype(np.float32))
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(sims)


def semantic_duplicates(
    embeddings: npt.NDArray[np.floating],
    priority: IntArray,
    epsilon: float,
    clusters: int,
) -> SemanticResult:
    """Rows of ``embeddings`` that duplicate a kept row (cosine > 1 - ``epsilon``).

    ``priority`` ranks rows (0 = kept first); ties are broken by position. The result is a
    function of the rows and their priorities, not of their order in ``embeddings``.
    """
    n = len(embeddings)
    empty_i = np.empty(0, dtype=np.int64)
    if n < 2:
        return SemanticResult(empty_i, empty_i, np.empty(0, dtype=np.float32), min(n, 1), 0)
    order = np.lexsort((np.arange(n), priority))  # canonical visiting order
    x = _normalise(np.asarray(embeddings)[order])
    labels = kmeans(x, clusters)
    threshold = 1.0 - epsilon
    dropped: list[int] = []
    dup_of: list[int] = []
    cosine: list[float] = []
    pairs = 0
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)  # ascending = priority order
        if len(members) < 2:
            continue
        i, j, s = _cluster_edges(x[members], threshold)
        pairs += len(i)
        if len(i) == 0:
            continue
        by_row: dict[int, list[tuple[int, float]]] = {}
        for a, b, v in zip(i.tolist(), j.tolist(), s.tolist(), strict=True):
            by_row.setdefault(a, []).append((b, v))
        removed: set[int] = set()
        for a in sorted(by_row):
            kept = [(v, -b) for b, v in by_row[a] if b not in removed]
            if kept:
                v, neg_b = max(kept)
                removed.add(a)
                dropped.append(int(order[members[a]]))
                dup_of.append(int(order[members[-neg_b]]))
                cosine.append(v)
    idx = np.argsort(np.asarray(dropped, dtype=np.int64), kind="stable")
    return SemanticResult(
        np.asarray(dropped, dtype=np.int64)[idx],
        np.asarray(dup_of, dtype=np.int64)[idx],
        np.asarray(cosine, dtype=np.float32)[idx],
        len(np.unique(labels)),
        pairs,
    )
