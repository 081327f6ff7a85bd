"""What the canary analysis consumes: counts per arm over one window, never raw samples.

Every backend reduces a window ``[start, end)`` of traffic to a :class:`WindowCounts`:

- per arm (:class:`ArmCounts`, one for stable, one for the candidate): ``requests`` answered
  or failed, ``errors`` among them, and the successful requests' latencies as a cumulative
  histogram (:class:`LatencyHistogram`, Prometheus ``_bucket{le=...}`` semantics:
  ``counts[i]`` requests took at most ``bounds[i]`` seconds; the last bound is ``+Inf``).
  Both arms must use the same bounds. From them the analysis takes the stable arm's p95
  (the upper bound of the bucket holding it) and counts each arm's *exceedances*, requests
  slower than that bound, which Fisher's exact test compares (a quantile test: a candidate
  no slower at p95 has no more than stable's share above stable's p95);
- :class:`PairedQuality`: the same requests answered by both models, on a common scale,
  never raw scores of two different models. ``compared`` requests (distinct keys) that both
  models answered, ``agree`` of them with the same top-1 answer (top-1 caption among the
  request's candidates for CLIP retrieval, top-1 label for a classifier). With
  ``reference="labels"`` each request carries its correct answer and ``stable_only`` /
  ``candidate_only`` are McNemar's discordant counts (only stable right / only the
  candidate right); with ``reference="stable"`` the stable model's answer is the reference:
  ``stable_only = compared - agree`` and ``candidate_only = 0`` (agreement with the
  champion). ``None`` when the backend has no paired answers: a gap, which fails a step
  that requires the ``quality`` metric.

Feeding it:

- local backend: per-request records from the router → :meth:`ArmCounts.from_samples` with
  :data:`FINE_LATENCY_BOUNDS` (1% resolution), and paired answers by request key;
- KServe backend: Prometheus ``sum(increase(..._requests_total))``, ``..._errors_total`` and
  ``sum by (le) (increase(..._latency_seconds_bucket))`` per revision →
  :meth:`ArmCounts.from_buckets` (bounds are the predictor's histogram buckets).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np


def _fine_bounds() -> tuple[float, ...]:
    """Geometric bucket bounds from 0.1 ms to 10 min, 1% apart, then +Inf."""
    n = math.ceil(math.log(600.0 / 1e-4) / math.log(1.01))
    return (*(float(b) for b in 1e-4 * 1.01 ** np.arange(n + 1)), math.inf)


FINE_LATENCY_BOUNDS: tuple[float, ...] = _fine_bounds()


@dataclass(frozen=True)
class LatencyHistogram:
    """Cumulative latency histogram: ``counts[i]`` requests took at most ``bounds[i]`` s."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.bounds) != len(self.counts) or not self.bounds:
            raise ValueError("latency histogram: bounds and counts must be non-empty, same length")
        if self.bounds[-1] != math.inf:
            raise ValueError("latency histogram: the last bound must be +Inf")
        if any(b >= a for a, b in zip(self.bounds[1:], self.bounds[:-1], strict=True)):
            raise ValueError("latency histogram: bounds must increase")
        if any(c < 0 for c in self.counts) or any(
            b < a for a, b in zip(self.counts[:-1], self.counts[1:], strict=True)
        ):
            raise ValueError("latency histogram: cumulative counts must be >= 0, non-decreasing")

    @classmethod
    def empty(cls, bounds: tuple[float, ...] = FINE_LATENCY_BOUNDS) -> LatencyHistogram:
        return cls(bounds, (0,) * len(bounds))

    @classmethod
    def from_samples(
        cls, latencies_s: Iterable[float], bounds: tuple[float, ...] = FINE_LATENCY_BOUNDS
    ) -> LatencyHistogram:
        lat = np.asarray(list(latencies_s), dtype=float)
        if lat.size and not np.isfinite(lat).all():
            raise ValueError("latency histogram: non-finite latency sample")
        edges = np.asarray(bounds, dtype=float)
        counts = np.searchsorted(np.sort(lat), edges, side="right")
        return cls(tuple(bounds), tuple(int(c) for c in counts))

    @classmethod
    def from_buckets(cls, buckets: Mapping[float, float]) -> LatencyHistogram:
        """Prometheus cumulative buckets ``{le: count}`` (``increase()`` results are rounded;
        a count below a smaller bucket's, from extrapolation, is raised to it)."""
        if math.inf not in buckets:
            raise ValueError("latency histogram: buckets need an le=+Inf bucket")
        bounds = tuple(sorted(float(b) for b in buckets))
        counts: list[int] = []
        for b in bounds:
            c = max(0, round(float(buckets[b])))
            counts.append(max(c, counts[-1]) if counts else c)
        return cls(bounds, tuple(counts))

    @property
    def total(self) -> int:
        return self.counts[-1]

    def quantile_bound(self, q: float) -> float:
        """The smallest bound at or above the ``q`` quantile (nan when empty)."""
        if self.total == 0:
            return math.nan
        need = q * self.total
        for bound, count in zip(self.bounds, self.counts, strict=True):
            if count >= need:
                return bound
        return math.inf

    def above(self, bound: float) -> int:
        """Requests slower than ``bound``, which must be one of :attr:`bounds`."""
        try:
            i = self.bounds.index(bound)
        except ValueError as exc:
            raise ValueError(f"latency histogram: {bound} is not one of its bounds") from exc
        return self.total - self.counts[i]

    def restrict(self, bounds: tuple[float, ...]) -> LatencyHistogram:
        """The same histogram at a subset of its bounds (cumulative counts stay exact)."""
        index = {b: i for i, b in enumerate(self.bounds)}
        return LatencyHistogram(bounds, tuple(self.counts[index[b]] for b in bounds))

    def summary(self) -> dict[str, Any]:
        def ms(q: float) -> float | None:
            v = self.quantile_bound(q)
            return None if not math.isfinite(v) else round(v * 1000, 3)

        return {"latencies": self.total, "latency_p50_ms": ms(0.5), "latency_p95_ms": ms(0.95)}


@dataclass(frozen=True)
class ArmCounts:
    """One arm's (stable or candidate) requests in a window, as counts."""

    requests: int
    errors: int
    latency: LatencyHistogram

    def __post_init__(self) -> None:
        if self.requests < 0 or not 0 <= self.errors <= self.requests:
            raise ValueError(
                f"arm counts: need 0 <= errors ({self.errors}) <= requests ({self.requests})"
            )
        if self.latency.total > self.requests - self.errors:
            raise ValueError(
                f"arm counts: {self.latency.total} latencies > {self.requests - self.errors} "
                "successful requests"
            )

    @classmethod
    def from_samples(
        cls,
        requests: int,
        errors: int,
        latencies_s: Iterable[float],
        bounds: tuple[float, ...] = FINE_LATENCY_BOUNDS,
    ) -> ArmCounts:
        return cls(requests, errors, LatencyHistogram.from_samples(latencies_s, bounds))

    @classmethod
    def from_buckets(
        cls, requests: float, errors: float, buckets: Mapping[float, float]
    ) -> ArmCounts:
        """From Prometheus ``increase()`` values (rounded; errors capped at requests, the
        latency count at the successes)."""
        req = max(0, round(requests))
        err = min(max(0, round(errors)), req)
        hist = LatencyHistogram.from_buckets(buckets)
        ok = req - err
        if hist.total > ok:  # counters scraped at slightly different instants
            hist = LatencyHistogram(hist.bounds, tuple(min(c, ok) for c in hist.counts))
        return cls(req, err, hist)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else math.nan

    def summary(self) -> dict[str, Any]:
        rate = self.error_rate
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": None if math.isnan(rate) else round(rate, 6),
            **self.latency.summary(),
        }


@dataclass(frozen=True)
class PairedQuality:
    """The same requests answered by both models (see the module docstring)."""

    compared: int
    agree: int
    stable_only: int
    candidate_only: int
    reference: Literal["labels", "stable"] = "labels"

    def __post_init__(self) -> None:
        if not 0 <= self.agree <= self.compared:
            raise ValueError(f"paired quality: agree {self.agree} not in [0, {self.compared}]")
        if self.stable_only < 0 or self.candidate_only < 0:
            raise ValueError("paired quality: discordant counts must be >= 0")
        if self.stable_only + self.candidate_only > self.compared:
            raise ValueError("paired quality: more discordant pairs than compared requests")
        if self.reference == "stable" and (
            self.candidate_only != 0 or self.stable_only != self.compared - self.agree
        ):
            raise ValueError(
                "paired quality: with reference 'stable', stable_only = compared - agree and "
                "candidate_only = 0"
            )

    @classmethod
    def against_stable(cls, compared: int, agree: int) -> PairedQuality:
        return cls(compared, agree, compared - agree, 0, "stable")

    def summary(self) -> dict[str, Any]:
        return {
            "compared": self.compared,
            "agree": self.agree,
            "agreement": round(self.agree / self.compared, 6) if self.compared else None,
            "stable_only": self.stable_only,
            "candidate_only": self.candidate_only,
            "reference": self.reference,
        }


@dataclass(frozen=True)
class WindowCounts:
    """Stable and candidate over the same window, plus their paired answers."""

    stable: ArmCounts
    candidate: ArmCounts
    quality: PairedQuality | None = None

    def __post_init__(self) -> None:
        if self.stable.latency.bounds != self.candidate.latency.bounds:
            raise ValueError("window counts: stable and candidate latency bounds differ")

    @classmethod
    def aligned(
        cls, stable: ArmCounts, candidate: ArmCounts, quality: PairedQuality | None = None
    ) -> WindowCounts:
        """Both arms at the bounds they share (e.g. Prometheus series where one arm lacks
        some ``le`` buckets); ``+Inf`` is always shared."""
        common = tuple(b for b in stable.latency.bounds if b in set(candidate.latency.bounds))
        return cls(
            ArmCounts(stable.requests, stable.errors, stable.latency.restrict(common)),
            ArmCounts(candidate.requests, candidate.errors, candidate.latency.restrict(common)),
            quality,
        )
