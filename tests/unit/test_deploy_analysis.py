"""Canary analysis on synthetic samples: regressions fail, equal distributions pass at about
the nominal false-positive rate, thin data is inconclusive, missing metrics fail."""

from __future__ import annotations

import numpy as np
import pytest

from pairflow.deploy.analysis import (
    Record,
    Samples,
    Verdict,
    analyze_step,
    error_rate_test,
    holm,
    latency_test,
    quality_test,
    window_samples,
)
from pairflow.deploy.settings import AnalysisConfig


def _samples(
    rng: np.random.Generator,
    n: int,
    *,
    error_rate: float = 0.0,
    latency_ms: float = 20.0,
    score: float = 0.3,
) -> Samples:
    errors = int(rng.binomial(n, error_rate))
    ok = n - errors
    lat = rng.lognormal(np.log(latency_ms / 1000), 0.3, ok)
    return Samples(n, errors, lat, rng.normal(score, 0.05, ok))


def test_sparse_errors_zero_on_stable_fail_with_fisher() -> None:
    rng = np.random.default_rng(0)
    stable = Samples(200, 0, rng.random(200), rng.random(200))
    cand = Samples(60, 5, rng.random(55), rng.random(55))
    res = error_rate_test(stable, cand, 0.01)
    assert res.p_value is not None and res.p_value < 0.01
    verdict = analyze_step(stable, cand, AnalysisConfig(metrics=["error_rate"]), 50)
    assert verdict.verdict == Verdict.FAIL
    assert "error_rate" in verdict.reasons[0]


def test_error_increase_below_minimum_effect_passes() -> None:
    # 1000 vs 1000 requests, 0.2% vs 0.6%: may be significant-ish but below a 1% minimum.
    stable, cand = Samples(5000, 10), Samples(5000, 30)
    assert error_rate_test(stable, cand, 0.01).p_value < 0.05  # type: ignore[operator]
    cfg = AnalysisConfig(metrics=["error_rate"], min_error_rate_increase=0.01)
    assert analyze_step(stable, cand, cfg, 50).verdict == Verdict.PASS


@pytest.mark.parametrize(
    ("kwargs", "metric"),
    [
        ({"error_rate": 0.2}, "error_rate"),
        ({"latency_ms": 60.0}, "latency_p95"),
        ({"score": 0.2}, "quality"),
    ],
)
def test_each_regression_is_detected(kwargs: dict[str, float], metric: str) -> None:
    rng = np.random.default_rng(1)
    stable = _samples(rng, 150)
    cand = _samples(rng, 100, **kwargs)
    res = analyze_step(stable, cand, AnalysisConfig(), 50)
    assert res.verdict == Verdict.FAIL
    failed = [m.metric for m in res.metrics if m.regression]
    assert failed == [metric]


def test_equal_distributions_pass_at_about_nominal_false_positive_rate() -> None:
    rng = np.random.default_rng(2)
    trials, alpha = 400, 0.05
    cfg = AnalysisConfig(
        alpha=alpha,
        min_latency_increase=0,
        min_latency_increase_ms=0,
        min_quality_drop=0,
        min_error_rate_increase=0,
    )
    fails = sum(
        analyze_step(
            _samples(rng, 120, error_rate=0.02),
            _samples(rng, 120, error_rate=0.02),
            cfg,
            50,
        ).verdict
        == Verdict.FAIL
        for _ in range(trials)
    )
    assert fails / trials <= alpha + 0.03
    # a single rank test without correction runs at about alpha (not far below it either)
    lat_fp = sum(
        latency_test(_samples(rng, 120), _samples(rng, 120), 0, 0).p_value < alpha  # type: ignore[operator]
        for _ in range(trials)
    )
    assert 0.02 <= lat_fp / trials <= 0.09


def test_with_default_minimum_effects_equal_samples_almost_never_fail() -> None:
    rng = np.random.default_rng(3)
    fails = sum(
        analyze_step(_samples(rng, 100), _samples(rng, 100), AnalysisConfig(), 50).verdict
        == Verdict.FAIL
        for _ in range(200)
    )
    assert fails <= 4


def test_too_few_samples_is_inconclusive_not_pass() -> None:
    rng = np.random.default_rng(4)
    res = analyze_step(_samples(rng, 200), _samples(rng, 10), AnalysisConfig(), 50)
    assert res.verdict == Verdict.INCONCLUSIVE
    assert "too few requests" in res.reasons[0]


def test_missing_metric_data_fails() -> None:
    rng = np.random.default_rng(5)
    stable = _samples(rng, 100)
    cand = Samples(100, 0, rng.lognormal(-4, 0.3, 100), np.zeros(0))  # no scores served
    res = analyze_step(stable, cand, AnalysisConfig(), 50)
    assert res.verdict == Verdict.FAIL
    assert any("quality" in r and "candidate" in r for r in res.reasons)


def test_interim_look_never_passes_and_fails_only_on_clear_regression() -> None:
    rng = np.random.default_rng(6)
    good = analyze_step(_samples(rng, 100), _samples(rng, 100), AnalysisConfig(), 50, interim=True)
    assert good.verdict == Verdict.INCONCLUSIVE
    bad = analyze_step(
        _samples(rng, 100), _samples(rng, 40, error_rate=0.5), AnalysisConfig(), 50, interim=True
    )
    assert bad.verdict == Verdict.FAIL  # before min_requests: a clear regression stops early
    slight = analyze_step(
        Samples(100, 0, rng.random(100), rng.random(100)),
        Samples(20, 2, rng.random(18), rng.random(18)),
        AnalysisConfig(metrics=["error_rate"]),
        50,
        interim=True,
    )
    assert slight.verdict == Verdict.INCONCLUSIVE  # 2 errors: below fail_fast_min_errors


def test_absolute_latency_floor_keeps_tiny_slowdowns_from_failing() -> None:
    stable = Samples(200, 0, np.full(200, 0.001), np.zeros(0))
    cand = Samples(200, 0, np.full(200, 0.002), np.zeros(0))  # 2x slower but +1 ms
    res = latency_test(stable, cand, 0.25, 5.0)
    assert res.effect is not None and res.effect <= 0


def test_quality_test_direction() -> None:
    rng = np.random.default_rng(7)
    better = quality_test(_samples(rng, 100), _samples(rng, 100, score=0.4), 0.02)
    assert better.p_value is not None and better.p_value > 0.5


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_window_samples_selects_backend_and_time() -> None:
    recs = [
        Record(1.0, "stable", True, 0.01, 0.3),
        Record(2.0, "stable", False, 0.02),
        Record(2.5, "candidate", True, 0.03, None),
        Record(9.0, "stable", True, 0.01, 0.3),
    ]
    s = window_samples(recs, "stable", 1.5, 5.0)
    assert (s.requests, s.errors, s.latencies.size, s.scores.size) == (1, 1, 0, 0)
    c = window_samples(recs, "candidate", 0, 5)
    assert (c.requests, c.errors, c.scores.size) == (1, 0, 0)
