"""Duplicate captions: identical after :func:`caption_key`, or near-identical (MinHash-LSH)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pandas as pd
from datasketch import MinHash, MinHashLSH

from pairflow.data.signatures import caption_key

__all__ = ["SHINGLE", "caption_keys", "caption_labels", "near_caption_pairs", "shingles"]

IntArray = npt.NDArray[np.int64]
SHINGLE = 5  # character n-gram length for near-duplicate captions
_MINHASH_SEED = 1
_LSH_WEIGHTS = (0.05, 0.95)  # (false-positive, false-negative) weights for band/row choice


def caption_keys(captions: Sequence[object]) -> list[str]:
    """:func:`caption_key` of each caption; non-strings (None, NaN) give ``""``."""
    return [caption_key(c) if isinstance(c, str) else "" for c in captions]


def caption_labels(keys: Sequence[str]) -> IntArray:
    """Group label per key (equal keys, equal labels); empty keys get -1 (never grouped)."""
    codes, _ = pd.factorize(pd.Series(list(keys), dtype=object))
    labels = codes.astype(np.int64)
    labels[np.array([k == "" for k in keys], dtype=bool)] = -1
    return labels


def shingles(key: str, k: int = SHINGLE) -> set[str]:
    """Character ``k``-grams of ``key`` (the whole key when shorter than ``k``)."""
    if len(key) <= k:
        return {key}
    return {key[i : i + k] for i in range(len(key) - k + 1)}


def _jaccard(a: set[str], b: set[str]) -> float:
    return len(a & b) / len(a | b)


def near_caption_pairs(
    keys: Sequence[str], threshold: float, num_perm: int
) -> tuple[IntArray, IntArray, npt.NDArray[np.float64]]:
    """Pairs ``(i < j)`` of non-empty keys whose shingle Jaccard similarity >= ``threshold``.

    MinHash-LSH (datasketch) proposes candidates; each is verified with the exact Jaccard
    of the shingle sets, so the result does not depend on hash collisions. Sorted by (i, j).
    """
    sets = [shingles(k) if k else set() for k in keys]
    # weights favour recall (few false negatives); candidates are verified exactly below
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, weights=_LSH_WEIGHTS)
    hashed: dict[int, MinHash] = {}
    for i, s in enumerate(sets):
        if not s:
            continue
        m = MinHash(num_perm=num_perm, seed=_MINHASH_SEED)
        m.update_batch([g.encode("utf-8") for g in sorted(s)])
        hashed[i] = m
        lsh.insert(i, m, check_duplication=False)
    pairs: set[tuple[int, int]] = set()
    for i, m in hashed.items():
        for j in lsh.query(m):
            if j != i:
                pairs.add((min(i, int(j)), max(i, int(j))))
    left: list[int] = []
    right: list[int] = []
    score: list[float] = []
    for i, j in sorted(pairs):
        sim = _jaccard(sets[i], sets[j])
        if sim >= threshold:
            left.append(i)
            right.append(j)
            score.append(sim)
    return (
        np.asarray(left, dtype=np.int64),
        np.asarray(right, dtype=np.int64),
        np.asarray(score, dtype=np.float64),
    )
