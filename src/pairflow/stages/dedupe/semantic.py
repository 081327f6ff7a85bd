"""SemDeDup-style semantic dedupe on (CLIP) embeddings.

Embeddings are L2-normalised and clustered with k-means (scikit-learn's ``KMeans``: k-means++
seeding, one initialisation, a fixed seed, one thread, so the clusters are a function of the
rows, not of the machine's core count). Inside each cluster rows are visited in priority order
(callers pass the survivor rank); a row is dropped when its cosine similarity to an already
kept row of the same cluster exceeds ``1 - epsilon``, and it records the most similar such
kept row.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from threadpoolctl import threadpool_limits

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
    """k-means labels of unit rows ``x`` (k-means++ seeding, fixed seed; ``k`` capped at the
    row count)."""
    # lazy: sklearn (slow to import); only the semantic (embedding) pass needs it
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    k = max(1, min(k, len(x)))
    km = KMeans(n_clusters=k, init="k-means++", n_init=1, max_iter=iterations, random_state=seed)
    # one thread: KMeans' parallel sums round differently with the thread count, which would
    # move rows near a boundary to another cluster on a machine with more cores
    with threadpool_limits(1), warnings.catch_warnings():
        # fewer distinct rows than k: some clusters share a point, which is fine here
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = km.fit_predict(x)
    return np.asarray(labels, dtype=np.int64)


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
