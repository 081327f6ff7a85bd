"""The smoke bake: a first deploy (no champion) judged alone against absolute SLOs.

With no stable version there is nothing to compare against, so the candidate serves all
replayed traffic and must meet the SLOs with confidence: the one-sided 95% Clopper-Pearson
upper bound of its error rate below ``analysis.slo_error_rate``, and of its share of
requests slower than ``analysis.slo_latency_p95_ms`` below 5% (p95 under the SLO). A bound
clearly on the wrong side (lower bound above the SLO) fails; a window too small to decide
either way is inconclusive (the controller extends, then fails), never a pass.
"""

from __future__ import annotations

import math
from typing import Any

from scipy import stats

from pairflow.stages.deploy.analysis import MetricResult, StepAnalysis, Verdict
from pairflow.stages.deploy.counts import ArmCounts, LatencyHistogram, WindowCounts
from pairflow.stages.deploy.settings import AnalysisConfig

CONFIDENCE = 0.95
P95_SHARE = 0.05


def clopper_pearson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """One-sided (lower, upper) Clopper-Pearson bounds of a proportion ``k / n``."""
    if n <= 0:
        return 0.0, 1.0
    a = 1 - confidence
    low = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return low, high


def slo_exceedances(hist: LatencyHistogram, slo_s: float) -> tuple[int, float]:
    """Requests slower than the largest bucket bound at or below ``slo_s`` (conservative:
    a request between that bound and the SLO counts as slower) and that bound."""
    bound = max((b for b in hist.bounds if b <= slo_s), default=None)
    if bound is None:
        return hist.total, 0.0
    return hist.above(bound), bound


def _check(
    metric: str, test: str, k: int, n: int, limit: float, detail: dict[str, Any]
) -> tuple[Verdict, MetricResult]:
    low, high = clopper_pearson(k, n)
    verdict = (
        Verdict.PASS if high < limit else Verdict.FAIL if low > limit else Verdict.INCONCLUSIVE
    )
    # the smallest n at which k = 0 would pass: (1 - confidence)^(1/n) > 1 - limit
    need = math.ceil(math.log(1 - CONFIDENCE) / math.log(1 - limit))
    return verdict, MetricResult(
        metric=metric,
        test=test,
        stable=None,
        candidate=k / n if n else None,
        effect=None,
        min_effect=limit,
        statistic=float(k),
        p_value=None,
        n_candidate=n,
        required_candidate=need,
        level=1 - CONFIDENCE,
        regression=verdict == Verdict.FAIL,
        powered=verdict != Verdict.INCONCLUSIVE,
        detail={"interval": [low, high], "confidence": CONFIDENCE, "slo": limit, **detail},
    )


def analyze_smoke(candidate: ArmCounts, cfg: AnalysisConfig) -> StepAnalysis:
    """Judge a smoke bake of ``candidate`` (all traffic) against the SLOs."""
    err_v, err = _check(
        "error_rate",
        "clopper_pearson_upper_vs_slo",
        candidate.errors,
        candidate.requests,
        cfg.slo_error_rate,
        {"errors": candidate.errors},
    )
    slow, bound = slo_exceedances(candidate.latency, cfg.slo_latency_p95_ms / 1000)
    lat_v, lat = _check(
        "latency_p95",
        "share_above_slo_clopper_pearson_upper_vs_5pct",
        slow,
        candidate.latency.total,
        P95_SHARE,
        {"slo_ms": cfg.slo_latency_p95_ms, "bound_ms": bound * 1000, "above": slow},
    )
    window = WindowCounts(
        ArmCounts(0, 0, LatencyHistogram.empty(candidate.latency.bounds)), candidate
    )
    results = [err, lat]
    reasons = [_line(r) for r in results]
    if Verdict.FAIL in (err_v, lat_v):
        verdict = Verdict.FAIL
    elif Verdict.INCONCLUSIVE in (err_v, lat_v):
        verdict = Verdict.INCONCLUSIVE
    else:
        verdict = Verdict.PASS
    return StepAnalysis(verdict, window, results, reasons, 1 - CONFIDENCE)


def _line(r: MetricResult) -> str:
    low, high = r.detail["interval"]
    state = "FAIL" if r.regression else "PASS" if r.powered else "INCONCLUSIVE"
    share = "error rate" if r.metric == "error_rate" else f"share above {r.detail['slo_ms']} ms"
    return (
        f"{state} smoke {r.metric}: {share} {r.candidate if r.candidate is not None else 'n/a'}"
        f" (k={int(r.statistic or 0)}, n={r.n_candidate}, 95% interval [{low:.4f}, {high:.4f}])"
        f" vs limit {r.min_effect}"
    )
