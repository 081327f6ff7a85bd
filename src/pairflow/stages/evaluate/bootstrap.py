"""Paired bootstrap over queries: a confidence interval for candidate − champion.

Both models are scored on the same held-out queries, so each resample draws query indices
once and applies them to both per-query vectors; the interval is the percentile interval
of the resampled mean differences.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

_MAX_CELLS = 20_000_000  # resample rows x queries held in memory at once


@dataclass(frozen=True)
class DeltaCI:
    """Mean of a per-query metric for both models, their difference and its interval."""

    metric: str
    candidate: float
    champion: float
    delta: float
    low: float
    high: float
    confidence: float
    samples: int
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def bootstrap_means(
    diff: npt.NDArray[np.floating], samples: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """``samples`` bootstrap means of ``diff`` (resampling its entries with replacement)."""
    d = np.asarray(diff, dtype=np.float64)
    n = d.size
    out = np.empty(samples, dtype=np.float64)
    step = max(1, _MAX_CELLS // max(n, 1))
    for start in range(0, samples, step):
        stop = min(samples, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        out[start:stop] = d[idx].mean(axis=1)
    return out


def paired_bootstrap(
    metric: str,
    candidate: npt.NDArray[np.floating],
    champion: npt.NDArray[np.floating],
    *,
    samples: int = 2000,
    confidence: float = 0.95,
    seed: int = 0,
) -> DeltaCI:
    """Percentile interval of mean(candidate − champion) over resampled queries."""
    a = np.asarray(candidate, dtype=np.float64)
    b = np.asarray(champion, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"{metric}: per-query vectors differ in shape ({a.shape} vs {b.shape})")
    if a.size == 0:
        raise ValueError(f"{metric}: no queries to bootstrap")
    diff = a - b
    means = bootstrap_means(diff, samples, np.random.default_rng(seed))
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return DeltaCI(
        metric=metric,
        candidate=float(a.mean()),
        champion=float(b.mean()),
        delta=float(diff.mean()),
        low=float(low),
        high=float(high),
        confidence=confidence,
        samples=samples,
        n=int(a.size),
    )
