"""Canary analysis: candidate against stable over the same time window, as pure functions.

One test per kind of metric, each one-sided (only a regression can fail a step):

- error rate: Fisher's exact test on the 2x2 table (candidate/stable x error/ok), so zero
  errors on stable against a few on the candidate can fail, which a normal approximation
  misses;
- p95 latency: Mann-Whitney U on successful requests' latencies (a rank test: robust to the
  heavy tails of latency), with the effect measured on the p95;
- quality: Mann-Whitney U on the pair scores the candidate and stable served.

The p-values of one step are Holm-corrected (family-wise ``alpha``). A significant result
fails only with an effect at least the configured minimum (tiny differences never fail).
Failure modes of Kayenta/Flagger/Argo analyses handled here: below ``min_requests`` a step
is *inconclusive*, never a pass; a required metric with no data fails; warm-up requests
are excluded; stable and candidate samples always come from the same window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from scipy import stats

from pairflow.deploy.settings import AnalysisConfig


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Samples:
    """One backend's requests in a window: counts, latencies (s) of successes, pair scores."""

    requests: int
    errors: int
    latencies: np.ndarray = field(default_factory=lambda: np.zeros(0))
    scores: np.ndarray = field(default_factory=lambda: np.zeros(0))

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else float("nan")

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": _num(self.error_rate),
            "latency_p50_ms": _num(_quantile(self.latencies, 0.5) * 1000),
            "latency_p95_ms": _num(_quantile(self.latencies, 0.95) * 1000),
            "score_mean": _num(float(np.mean(self.scores)) if self.scores.size else float("nan")),
            "scores": int(self.scores.size),
        }


@dataclass(frozen=True)
class Record:
    """One request through the router: when, which backend, outcome, latency, pair score."""

    t: float
    backend: str
    ok: bool
    latency_s: float
    score: float | None = None


def window_samples(records: list[Record], backend: str, start: float, end: float) -> Samples:
    """The ``backend``'s records with ``start <= t < end`` as :class:`Samples`."""
    sel = [r for r in records if r.backend == backend and start <= r.t < end]
    ok = [r for r in sel if r.ok]
    return Samples(
        requests=len(sel),
        errors=len(sel) - len(ok),
        latencies=np.array([r.latency_s for r in ok], dtype=float),
        scores=np.array([r.score for r in ok if r.score is not None], dtype=float),
    )


@dataclass(frozen=True)
class MetricResult:
    """One metric's comparison: values, test, statistic, raw and Holm-adjusted p, decision."""

    metric: str
    test: str
    stable: float | None
    candidate: float | None
    effect: float | None
    min_effect: float
    statistic: float | None
    p_value: float | None
    p_adjusted: float | None = None
    regression: bool = False
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {k: _num(v) if isinstance(v, float) else v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class StepAnalysis:
    """A step's verdict with every metric's figures and the reasons for the verdict."""

    verdict: Verdict
    stable: Samples
    candidate: Samples
    metrics: list[MetricResult]
    reasons: list[str]

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "stable": self.stable.summary(),
            "candidate": self.candidate.summary(),
            "metrics": [m.to_json() for m in self.metrics],
            "reasons": self.reasons,
        }


def _num(x: float | None) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return round(float(x), 6)


def _quantile(a: np.ndarray, q: float) -> float:
    return float(np.quantile(a, q)) if a.size else float("nan")


def error_rate_test(stable: Samples, candidate: Samples, min_increase: float) -> MetricResult:
    """Fisher's exact test, one-sided: is the candidate's error rate higher than stable's?"""
    table = [
        [candidate.errors, candidate.requests - candidate.errors],
        [stable.errors, stable.requests - stable.errors],
    ]
    res = stats.fisher_exact(table, alternative="greater")
    effect = candidate.error_rate - stable.error_rate
    return MetricResult(
        metric="error_rate",
        test="fisher_exact_greater",
        stable=stable.error_rate,
        candidate=candidate.error_rate,
        effect=effect,
        min_effect=min_increase,
        statistic=float(res.statistic) if np.isfinite(res.statistic) else None,
        p_value=float(res.pvalue),
    )


def latency_test(
    stable: Samples, candidate: Samples, min_increase: float, min_increase_ms: float
) -> MetricResult:
    """Mann-Whitney U, one-sided (candidate slower); effect = relative p95 increase.

    The effect must exceed both the relative and the absolute (``min_increase_ms``) minimum.
    """
    s95 = _quantile(stable.latencies, 0.95)
    c95 = _quantile(candidate.latencies, 0.95)
    res = stats.mannwhitneyu(candidate.latencies, stable.latencies, alternative="greater")
    rel = (c95 - s95) / s95 if s95 > 0 else float("inf")
    if (c95 - s95) * 1000 < min_increase_ms:
        rel = min(rel, 0.0)
    return MetricResult(
        metric="latency_p95",
        test="mann_whitney_u_greater",
        stable=s95 * 1000,
        candidate=c95 * 1000,
        effect=rel,
        min_effect=min_increase,
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
    )


def quality_test(stable: Samples, candidate: Samples, min_drop: float) -> MetricResult:
    """Mann-Whitney U, one-sided (candidate's served pair scores lower); effect = mean drop."""
    res = stats.mannwhitneyu(candidate.scores, stable.scores, alternative="less")
    s_mean, c_mean = float(np.mean(stable.scores)), float(np.mean(candidate.scores))
    return MetricResult(
        metric="quality",
        test="mann_whitney_u_less",
        stable=s_mean,
        candidate=c_mean,
        effect=s_mean - c_mean,
        min_effect=min_drop,
        statistic=float(res.statistic),
        p_value=float(res.pvalue),
    )


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order as given)."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted = [0.0] * m
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _missing(metric: str, stable: Samples, candidate: Samples, min_n: int) -> str | None:
    """Why ``metric`` cannot be computed from these samples (None when it can)."""
    if metric == "error_rate":
        return None
    if metric == "latency_p95":
        if candidate.latencies.size == 0 or stable.latencies.size == 0:
            side = "candidate" if candidate.latencies.size == 0 else "stable"
            return f"latency_p95: no successful requests with a latency on {side}"
        return None
    have = min(stable.scores.size, candidate.scores.size)
    if have == 0:
        side = "candidate" if candidate.scores.size == 0 else "stable"
        return f"quality: no pair scores recorded for {side} (metric gap counts as failure)"
    if have < min_n // 2:
        return f"quality: only {have} scored requests (< {min_n // 2}); metric gap"
    return None


def analyze_step(
    stable: Samples,
    candidate: Samples,
    cfg: AnalysisConfig,
    min_requests: int,
    *,
    interim: bool = False,
) -> StepAnalysis:
    """Judge one step. ``interim`` looks (during a bake) can only fail, at ``fail_fast_alpha``.

    Returns FAIL on a significant regression larger than its minimum effect, on an absolute
    guard, or on a required metric without data; INCONCLUSIVE below ``min_requests`` on
    either side (for interim looks: whenever it does not fail); PASS otherwise.
    """
    reasons: list[str] = []
    thin = min(stable.requests, candidate.requests) < min_requests
    results: list[MetricResult] = []
    gaps: list[str] = []
    for metric in cfg.metrics:
        gap = _missing(metric, stable, candidate, min_requests)
        if gap is not None:
            gaps.append(gap)
            continue
        if metric == "error_rate":
            if stable.requests == 0 or candidate.requests == 0:
                side = "candidate" if candidate.requests == 0 else "stable"
                gaps.append(f"error_rate: no requests reached {side}")
                continue
            results.append(error_rate_test(stable, candidate, cfg.min_error_rate_increase))
        elif metric == "latency_p95":
            results.append(
                latency_test(
                    stable, candidate, cfg.min_latency_increase, cfg.min_latency_increase_ms
                )
            )
        else:
            results.append(quality_test(stable, candidate, cfg.min_quality_drop))

    alpha = cfg.fail_fast_alpha if interim else cfg.alpha
    adjusted = holm([r.p_value if r.p_value is not None else 1.0 for r in results])
    judged: list[MetricResult] = []
    for r, p_adj in zip(results, adjusted, strict=True):
        effect = r.effect if r.effect is not None else 0.0
        regression = p_adj < alpha and effect >= r.min_effect and effect > 0
        if interim and r.metric == "error_rate" and candidate.errors < cfg.fail_fast_min_errors:
            regression = False
        reason = ""
        if regression:
            reason = (
                f"{r.metric}: candidate {_fmt(r.candidate)} vs stable {_fmt(r.stable)} "
                f"({r.test}, p={p_adj:.2g} < {alpha}, effect {effect:.3g} >= {r.min_effect})"
            )
            reasons.append(reason)
        judged.append(_with(r, p_adjusted=p_adj, regression=regression, reason=reason))

    if (
        "error_rate" in cfg.metrics
        and candidate.requests >= min_requests
        and candidate.error_rate > cfg.max_error_rate
        and not interim
    ):
        reasons.append(
            f"error_rate: candidate {candidate.error_rate:.3f} above the absolute guard "
            f"{cfg.max_error_rate}"
        )
    if reasons:
        return StepAnalysis(Verdict.FAIL, stable, candidate, judged, reasons)
    if thin:
        why = (
            f"too few requests: stable {stable.requests}, candidate {candidate.requests} "
            f"(need {min_requests} each)"
        )
        return StepAnalysis(Verdict.INCONCLUSIVE, stable, candidate, judged, [why, *gaps])
    if gaps:
        verdict = Verdict.INCONCLUSIVE if interim else Verdict.FAIL
        return StepAnalysis(verdict, stable, candidate, judged, gaps)
    if interim:
        return StepAnalysis(Verdict.INCONCLUSIVE, stable, candidate, judged, ["interim look"])
    return StepAnalysis(Verdict.PASS, stable, candidate, judged, ["no significant regression"])


def _with(r: MetricResult, **changes: Any) -> MetricResult:
    data = dict(r.__dict__)
    data.update(changes)
    return MetricResult(**data)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.4g}"
