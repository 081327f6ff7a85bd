"""Canary analysis: candidate against stable over the same window, from counts (pure functions).

Input is a :class:`pairflow.stages.deploy.counts.WindowCounts` (see that module for what backends
feed). Each metric is tested with the statistic that matches its claim, one-sided (only a
regression can fail a step):

- **error rate**: Fisher's exact test on candidate/stable x error/ok (a proportion test that
  stays exact at zero errors on stable);
- **p95 latency**: a quantile test. The threshold is the stable arm's p95 (the upper bound of
  its histogram bucket); each arm's *exceedances* (requests slower than it) are compared
  with Fisher's exact test. A candidate no slower at p95 has no larger share above it. A
  practical guard also requires the candidate's p95 to be at least ``min_latency_increase``
  (relative) and ``min_latency_increase_ms`` above stable's;
- **quality**, on a common scale, never raw scores of two models: the same requests answered
  by both models (:class:`~pairflow.stages.deploy.counts.PairedQuality`). Against reference answers,
  McNemar's exact test on the discordant pairs (only stable right vs only the candidate
  right); against the stable model's answers, a binomial test of the disagreement rate above
  ``min_quality_drop``.

**Power first.** Before a step is judged, each metric's *required sample size* is computed:
the window size at which its test detects the configured minimum effect with
``power`` (default 0.9) at the step's level, for the step's traffic split (two-proportion
normal approximation with Fleiss' continuity correction for the Fisher tests; Connor's
formula for McNemar). The planning baseline is the stable arm's observed rate. A window
below any requirement is *inconclusive*: the controller extends the bake and, if still
short, fails; it never passes. Minimum effects:

- errors: candidate rate ``max(ratio x stable, stable + min_error_rate_increase)``;
- latency: ``min_latency_exceedance`` more of the candidate's requests above stable's p95;
- quality: ``min_quality_drop`` (accuracy drop, or disagreement with stable beyond it).

Levels: ``alpha`` is family-wise over the whole rollout; each analysed step tests at
``alpha / steps`` and the step's p-values are Holm-corrected across metrics, so an identical
candidate is rolled back at most ``alpha`` of the time. Interim looks during a bake can only
fail, at ``fail_fast_alpha``. A required metric without data fails the step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from scipy import stats

from pairflow.stages.deploy.counts import ArmCounts, PairedQuality, WindowCounts
from pairflow.stages.deploy.settings import AnalysisConfig


class Verdict(StrEnum):
    PASS = "pass"
    FAIL = "fail"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class Record:
    """One request through the router: when, which backend, outcome, latency, score, answer.

    ``key`` identifies the request's content (the replayed row), ``answer`` is the model's
    top-1 answer and ``reference`` the request's correct answer when it has one: they feed
    the paired quality comparison.
    """

    t: float
    backend: str
    ok: bool
    latency_s: float
    score: float | None = None
    key: str | None = None
    answer: str | None = None
    reference: str | None = None


@dataclass(frozen=True)
class MetricResult:
    """One metric's test: values, statistic, raw and Holm-adjusted p, sample sizes, power."""

    metric: str
    test: str
    stable: float | None
    candidate: float | None
    effect: float | None
    min_effect: float
    statistic: float | None
    p_value: float | None
    n_stable: int = 0
    n_candidate: int = 0
    required_stable: int = 0
    required_candidate: int = 0
    power: float = 0.9
    level: float = 0.05
    p_adjusted: float | None = None
    regression: bool = False
    powered: bool = True
    reason: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out = {k: _num(v) if isinstance(v, float) else v for k, v in self.__dict__.items()}
        out["detail"] = {k: _num(v) if isinstance(v, float) else v for k, v in self.detail.items()}
        return out


@dataclass(frozen=True)
class StepAnalysis:
    """A step's verdict with every metric's figures and the reasons for the verdict."""

    verdict: Verdict
    counts: WindowCounts
    metrics: list[MetricResult]
    reasons: list[str]
    level: float = 0.05

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict.value,
            "level": self.level,
            "stable": self.counts.stable.summary(),
            "candidate": self.counts.candidate.summary(),
            "quality": self.counts.quality.summary() if self.counts.quality else None,
            "metrics": [m.to_json() for m in self.metrics],
            "reasons": self.reasons,
        }


def _num(x: float | None) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return round(float(x), 6)


# -- sample sizes ------------------------------------------------------------------------------


_SIMS = 4000


def _fisher_power(n_c: int, n_s: int, p0: float, p1: float, alpha: float) -> float:
    """Power of the one-sided Fisher test at these sizes (seeded Monte Carlo; the p-value
    of [[c, n_c - c], [s, n_s - s]] is the hypergeometric tail P(X >= c))."""
    rng = np.random.default_rng(0)
    c = rng.binomial(n_c, p1, _SIMS)
    s = rng.binomial(n_s, p0, _SIMS)
    p = stats.hypergeom.sf(c - 1, n_c + n_s, c + s, n_c)
    return float(np.mean(p < alpha))


def _mcnemar_power(n: int, psi: float, drop: float, alpha: float) -> float:
    """Power of the exact one-sided McNemar test (seeded Monte Carlo)."""
    rng = np.random.default_rng(0)
    disc = rng.binomial(n, psi, _SIMS)
    b = rng.binomial(disc, min(1.0, (psi + drop) / (2 * psi)))
    p = np.where(disc > 0, stats.binom.sf(b - 1, disc, 0.5), 1.0)
    return float(np.mean(p < alpha))


def _grow(n: int, power_at: Callable[[int], float], power: float) -> int:
    """The smallest checked size from ``n`` up (5% steps) whose simulated power is met."""
    for _ in range(60):
        if power_at(n) >= power:
            return n
        n = max(n + 1, math.ceil(n * 1.05))
    return n


@functools.lru_cache(maxsize=4096)
def two_proportion_n(p0: float, p1: float, ratio: float, alpha: float, power: float) -> int:
    """Candidate-arm size for a one-sided test of ``p1 > p0`` (stable arm = ``ratio`` x it).

    Starts from the normal approximation with the pooled variance under H0 and Fleiss'
    continuity correction, then grows until the exact Fisher test reaches ``power`` in a
    seeded simulation (the approximation runs short for unequal arms at small levels).
    ``ratio`` = n_stable / n_candidate.
    """
    d = p1 - p0
    if d <= 0:
        raise ValueError(f"sample size: p1 {p1} must exceed p0 {p0}")
    k = ratio
    za, zb = float(stats.norm.ppf(1 - alpha)), float(stats.norm.ppf(power))
    pbar = (p1 + k * p0) / (1 + k)
    a = za * math.sqrt(pbar * (1 - pbar) * (1 + 1 / k))
    b = zb * math.sqrt(p1 * (1 - p1) + p0 * (1 - p0) / k)
    n = ((a + b) / d) ** 2
    n_cc = math.ceil(n / 4 * (1 + math.sqrt(1 + 2 * (k + 1) / (k * n * d))) ** 2)
    return _grow(n_cc, lambda m: _fisher_power(m, math.ceil(m * k), p0, p1, alpha), power)


@functools.lru_cache(maxsize=4096)
def mcnemar_n(discordant: float, drop: float, alpha: float, power: float) -> int:
    """Paired requests for exact McNemar to detect an accuracy ``drop`` (Connor 1987, then
    checked by simulation); the discordant share is at least the drop itself."""
    psi = max(discordant, drop)
    za, zb = float(stats.norm.ppf(1 - alpha)), float(stats.norm.ppf(power))
    n = math.ceil((za * math.sqrt(psi) + zb * math.sqrt(max(psi - drop**2, 1e-12))) ** 2 / drop**2)
    return _grow(n, lambda m: _mcnemar_power(m, psi, drop, alpha), power)


@functools.lru_cache(maxsize=256)
def one_proportion_n(p0: float, p1: float, alpha: float, power: float) -> int:
    """Size for a one-sided binomial test of ``p > p0`` to detect ``p1`` (checked by
    simulation against the exact test)."""
    za, zb = float(stats.norm.ppf(1 - alpha)), float(stats.norm.ppf(power))
    n = math.ceil(
        ((za * math.sqrt(p0 * (1 - p0)) + zb * math.sqrt(p1 * (1 - p1))) / (p1 - p0)) ** 2
    )

    def power_at(m: int) -> float:
        k = np.random.default_rng(0).binomial(m, p1, _SIMS)
        return float(np.mean(stats.binom.sf(k - 1, m, p0) < alpha))

    return _grow(n, power_at, power)


PLAN_GRID = 0.0025


def planning_rate(observed: float) -> float:
    """The observed baseline rate rounded up to a 0.25-point grid (sizes are planned, and
    cached, per grid value; rounding up keeps the plan on the conservative side)."""
    return min(0.99, math.ceil(round(observed / PLAN_GRID, 6)) * PLAN_GRID)


def _split(n_cand: int, ratio: float) -> tuple[int, int]:
    return math.ceil(n_cand * ratio), n_cand


def traffic_ratio(weight: int) -> float:
    """n_stable / n_candidate expected at ``weight``% candidate traffic."""
    return (100 - weight) / weight if 0 < weight < 100 else 1.0


def window_ratio(n_stable: int, n_candidate: int, weight: int) -> float:
    """The window's n_stable / n_candidate on a 1.25x geometric grid (sizes are planned at
    the split the window has; the grid keeps the cached plans few). The configured split
    when an arm is empty."""
    if n_stable <= 0 or n_candidate <= 0:
        return traffic_ratio(weight)
    step = math.log(1.25)
    return float(round(math.exp(round(math.log(n_stable / n_candidate) / step) * step), 4))


# -- tests -------------------------------------------------------------------------------------


def _required(
    stable: ArmCounts,
    candidate: ArmCounts,
    p0: float,
    p1: float,
    weight: int,
    level: float,
    cfg: AnalysisConfig,
) -> tuple[int, int]:
    """(stable, candidate) requests needed to detect ``p0 -> p1`` at ``cfg.power``, split in the
    window's observed traffic ratio."""
    ratio = window_ratio(stable.requests, candidate.requests, weight)
    return _split(two_proportion_n(p0, p1, ratio, level, cfg.power), ratio)


def _fisher_greater(c_hit: int, c_n: int, s_hit: int, s_n: int) -> tuple[float | None, float]:
    res = stats.fisher_exact([[c_hit, c_n - c_hit], [s_hit, s_n - s_hit]], alternative="greater")
    stat = float(res.statistic)
    return (stat if math.isfinite(stat) else None), float(res.pvalue)


def error_rate_test(
    stable: ArmCounts,
    candidate: ArmCounts,
    cfg: AnalysisConfig,
    level: float,
    weight: int,
    plan: bool = True,
) -> MetricResult:
    """Fisher's exact test, one-sided: is the candidate's error rate higher than stable's?"""
    stat, p = _fisher_greater(candidate.errors, candidate.requests, stable.errors, stable.requests)
    p0 = stable.error_rate
    plan0 = planning_rate(p0)
    p1 = min(0.999, max(plan0 * cfg.min_error_rate_ratio, plan0 + cfg.min_error_rate_increase))
    need_s, need_c = _required(stable, candidate, plan0, p1, weight, level, cfg) if plan else (0, 0)
    return MetricResult(
        metric="error_rate",
        test="fisher_exact_greater",
        stable=p0,
        candidate=candidate.error_rate,
        effect=candidate.error_rate - p0,
        min_effect=p1 - plan0,
        statistic=stat,
        p_value=p,
        n_stable=stable.requests,
        n_candidate=candidate.requests,
        required_stable=need_s,
        required_candidate=need_c,
        power=cfg.power,
        level=level,
        detail={"errors_stable": stable.errors, "errors_candidate": candidate.errors},
    )


def latency_test(
    stable: ArmCounts,
    candidate: ArmCounts,
    cfg: AnalysisConfig,
    level: float,
    weight: int,
    plan: bool = True,
) -> MetricResult | str:
    """Exceedances above stable's p95 bucket bound, Fisher one-sided (a quantile test)."""
    s, c = stable.latency, candidate.latency
    threshold = s.quantile_bound(0.95)
    if not math.isfinite(threshold):
        return "latency_p95: stable's p95 is beyond the largest finite histogram bucket"
    s_hit, c_hit = s.above(threshold), c.above(threshold)
    stat, p = _fisher_greater(c_hit, c.total, s_hit, s.total)
    p0 = s_hit / s.total
    plan0 = planning_rate(p0)
    p1 = min(0.999, plan0 + cfg.min_latency_exceedance)
    need_s, need_c = _required(stable, candidate, plan0, p1, weight, level, cfg) if plan else (0, 0)
    s95, c95 = threshold, c.quantile_bound(0.95)
    increase = c95 - s95
    guard = increase * 1000 >= cfg.min_latency_increase_ms and (
        increase >= cfg.min_latency_increase * s95
    )
    return MetricResult(
        metric="latency_p95",
        test="exceedance_over_stable_p95_fisher_greater",
        stable=s95 * 1000,
        candidate=c95 * 1000 if math.isfinite(c95) else math.inf,
        effect=c_hit / c.total - p0,
        min_effect=p1 - plan0,
        statistic=stat,
        p_value=p,
        n_stable=s.total,
        n_candidate=c.total,
        required_stable=need_s,
        required_candidate=need_c,
        power=cfg.power,
        level=level,
        detail={
            "threshold_ms": threshold * 1000,
            "exceed_stable": s_hit,
            "exceed_candidate": c_hit,
            "p95_guard_met": guard,
        },
    )


def quality_test(
    q: PairedQuality, cfg: AnalysisConfig, level: float, plan: bool = True
) -> MetricResult:
    """Paired: McNemar's exact test against references, or disagreement with stable."""
    n = q.compared
    if q.reference == "labels":
        b, c = q.stable_only, q.candidate_only
        p = float(stats.binomtest(b, b + c, 0.5, alternative="greater").pvalue) if b + c else 1.0
        psi = planning_rate((b + c) / n) if n else 0.0
        need = mcnemar_n(psi, cfg.min_quality_drop, level, cfg.power) if plan else 0
        test, effect, stat = "mcnemar_exact_greater", (b - c) / n if n else 0.0, float(b - c)
    else:
        d = q.compared - q.agree
        p0 = cfg.min_quality_drop
        p = float(stats.binomtest(d, n, p0, alternative="greater").pvalue) if n else 1.0
        need = one_proportion_n(p0, min(0.999, 2 * p0), level, cfg.power) if plan else 0
        test, effect, stat = "disagreement_binomial_greater", d / n if n else 0.0, float(d)
    return MetricResult(
        metric="quality",
        test=test,
        stable=None,
        candidate=q.agree / n if n else None,
        effect=effect,
        min_effect=cfg.min_quality_drop,
        statistic=stat,
        p_value=p,
        n_stable=n,
        n_candidate=n,
        required_stable=need,
        required_candidate=need,
        power=cfg.power,
        level=level,
        detail=q.summary(),
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


def step_level(cfg: AnalysisConfig, analysed_steps: int) -> float:
    """The level one analysed step tests at: ``alpha`` split over the rollout's steps."""
    return cfg.alpha / max(1, analysed_steps)


def _run_tests(
    w: WindowCounts, cfg: AnalysisConfig, level: float, weight: int, plan: bool
) -> tuple[list[MetricResult], list[str]]:
    results: list[MetricResult] = []
    gaps: list[str] = []
    m = max(1, len(cfg.metrics))
    bound = level / m  # Bonferroni bound for the sample size; Holm is never stricter
    if w.stable.requests == 0 or w.candidate.requests == 0:
        return results, []  # nothing reached an arm: a thin window, not a gap
    for metric in cfg.metrics:
        if metric == "error_rate":
            results.append(error_rate_test(w.stable, w.candidate, cfg, bound, weight, plan))
        elif metric == "latency_p95":
            if w.stable.latency.total == 0 or w.candidate.latency.total == 0:
                side = "candidate" if w.candidate.latency.total == 0 else "stable"
                gaps.append(f"latency_p95: no successful requests with a latency on {side}")
                continue
            res = latency_test(w.stable, w.candidate, cfg, bound, weight, plan)
            if isinstance(res, str):
                gaps.append(res)
            else:
                results.append(res)
        else:
            if w.quality is None or w.quality.compared == 0:
                gaps.append("quality: no requests answered by both models (metric gap)")
                continue
            results.append(quality_test(w.quality, cfg, bound, plan))
    return results, gaps


def analyze_step(
    counts: WindowCounts,
    cfg: AnalysisConfig,
    *,
    weight: int = 50,
    analysed_steps: int = 1,
    interim: bool = False,
    min_requests: int = 0,
) -> StepAnalysis:
    """Judge one step at ``weight``% candidate traffic.

    FAIL: a significant regression (Holm-adjusted p below the step's level, effect > 0, and
    for latency the p95 guard), the absolute error-rate guard, or a required metric without
    data. INCONCLUSIVE: any metric's window below its required sample size (or an interim
    look that does not fail). PASS otherwise.
    """
    level = cfg.fail_fast_alpha if interim else step_level(cfg, analysed_steps)
    results, gaps = _run_tests(counts, cfg, level, weight, plan=not interim)
    adjusted = holm([r.p_value if r.p_value is not None else 1.0 for r in results])
    reasons: list[str] = []
    judged: list[MetricResult] = []
    short: list[str] = []
    for r, p_adj in zip(results, adjusted, strict=True):
        effect = r.effect if r.effect is not None else 0.0
        regression = p_adj < level and effect > 0
        if r.metric == "latency_p95" and not r.detail.get("p95_guard_met", False):
            regression = False
        if (
            interim
            and r.metric == "error_rate"
            and counts.candidate.errors < (cfg.fail_fast_min_errors)
        ):
            regression = False
        powered = r.n_candidate >= r.required_candidate and r.n_stable >= r.required_stable
        reason = ""
        if regression:
            reason = (
                f"{r.metric}: candidate {_fmt(r.candidate)} vs stable {_fmt(r.stable)} "
                f"({r.test}, p={p_adj:.2g} < {level:.3g}, effect {effect:.3g}, "
                f"n={r.n_candidate}/{r.n_stable})"
            )
            reasons.append(reason)
        elif not powered:
            short.append(
                f"{r.metric}: window n={r.n_candidate} candidate / {r.n_stable} stable below "
                f"the {r.required_candidate} / {r.required_stable} needed to detect "
                f"{r.min_effect:.3g} with power {r.power}"
            )
        judged.append(
            _with(r, p_adjusted=p_adj, regression=regression, powered=powered, reason=reason)
        )
    guard = counts.candidate.error_rate
    if (
        "error_rate" in cfg.metrics
        and not interim
        and counts.candidate.requests > 0
        and guard > cfg.max_error_rate
    ):
        reasons.append(
            f"error_rate: candidate {guard:.3f} above the absolute guard {cfg.max_error_rate}"
        )
    if reasons:
        return StepAnalysis(Verdict.FAIL, counts, judged, reasons, level)
    if interim:
        return StepAnalysis(Verdict.INCONCLUSIVE, counts, judged, ["interim look"], level)
    if gaps:
        return StepAnalysis(Verdict.FAIL, counts, judged, gaps, level)
    thin = min(counts.stable.requests, counts.candidate.requests)
    if thin < max(1, min_requests):
        short.append(
            f"too few requests: stable {counts.stable.requests}, candidate "
            f"{counts.candidate.requests} (need {max(1, min_requests)} each)"
        )
    if short:
        return StepAnalysis(Verdict.INCONCLUSIVE, counts, judged, short, level)
    why = [
        f"no significant regression (level {level:.3g}; each metric powered "
        f">= {cfg.power} for its minimum effect)"
    ]
    return StepAnalysis(Verdict.PASS, counts, judged, why, level)


def _with(r: MetricResult, **changes: Any) -> MetricResult:
    data = dict(r.__dict__)
    data.update(changes)
    return MetricResult(**data)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.4g}"
