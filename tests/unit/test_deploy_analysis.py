"""Canary analysis from counts: the counts interface, each metric's test, power-gated
verdicts (a thin window is inconclusive, never a pass), gaps fail, the smoke bake."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from pairflow.stages.deploy.analysis import (
    Record,
    Verdict,
    analyze_step,
    holm,
    mcnemar_n,
    two_proportion_n,
)
from pairflow.stages.deploy.counts import ArmCounts, LatencyHistogram, PairedQuality, WindowCounts
from pairflow.stages.deploy.settings import AnalysisConfig
from pairflow.stages.deploy.smoke import analyze_smoke, clopper_pearson
from pairflow.stages.deploy.window import window_counts


def _arm(
    rng: np.random.Generator, n: int, *, error_rate: float = 0.0, ms: float = 20.0
) -> ArmCounts:
    errors = int(rng.binomial(n, error_rate))
    lat = rng.lognormal(np.log(ms / 1000), 0.3, n - errors)
    return ArmCounts.from_samples(n, errors, lat)


def _window(
    rng: np.random.Generator,
    n_stable: int,
    n_cand: int,
    *,
    quality: PairedQuality | None = None,
    **cand: float,
) -> WindowCounts:
    q = quality or PairedQuality(min(n_cand, 400), min(n_cand, 400), 0, 0)
    return WindowCounts(_arm(rng, n_stable), _arm(rng, n_cand, **cand), q)


def test_counts_from_prometheus_buckets_and_samples_agree() -> None:
    lat = [0.004, 0.02, 0.02, 0.07, 0.3, 7.0]
    bounds = (0.005, 0.025, 0.1, 0.5, math.inf)
    from_samples = ArmCounts.from_samples(8, 2, lat, bounds)
    from_buckets = ArmCounts.from_buckets(
        8.0, 2.0, {0.005: 1.0, 0.025: 3.0, 0.1: 4.0, 0.5: 5.0, math.inf: 6.0}
    )
    assert from_samples == from_buckets
    h = from_samples.latency
    assert h.total == 6 and h.quantile_bound(0.5) == 0.025 and h.quantile_bound(0.95) == math.inf
    assert h.above(0.025) == 3
    with pytest.raises(ValueError, match="not one of its bounds"):
        h.above(0.03)
    with pytest.raises(ValueError, match="errors"):
        ArmCounts(3, 4, LatencyHistogram.empty())
    with pytest.raises(ValueError, match=r"\+Inf"):
        LatencyHistogram((0.1, 0.2), (1, 2))
    with pytest.raises(ValueError, match="bounds differ"):
        WindowCounts(from_samples, ArmCounts.from_samples(1, 0, [0.01]))


def test_sparse_errors_zero_on_stable_fail_with_fisher() -> None:
    rng = np.random.default_rng(0)
    cfg = AnalysisConfig(metrics=["error_rate"])
    w = WindowCounts(_arm(rng, 900), ArmCounts.from_samples(300, 12, [0.02] * 288))
    res = analyze_step(w, cfg, weight=25)
    assert res.verdict == Verdict.FAIL, res.reasons
    m = res.metrics[0]
    assert m.test == "fisher_exact_greater" and m.regression and m.p_adjusted is not None
    expected = stats.fisher_exact([[12, 288], [0, 900]], alternative="greater").pvalue
    assert m.p_value == pytest.approx(expected)


def test_latency_is_judged_on_exceedances_over_the_stable_p95() -> None:
    rng = np.random.default_rng(1)
    cfg = AnalysisConfig(metrics=["latency_p95"])
    stable = _arm(rng, 800)
    lat = rng.lognormal(np.log(0.02), 0.3, 800)
    lat[:80] = 10 * np.quantile(lat, 0.95)  # 10% of requests at 10x the p95
    cand = ArmCounts.from_samples(800, 0, lat)
    res = analyze_step(WindowCounts(stable, cand), cfg, weight=50)
    m = res.metrics[0]
    assert res.verdict == Verdict.FAIL and m.test.startswith("exceedance_over_stable_p95")
    assert m.detail["exceed_stable"] <= 0.05 * 800 and m.detail["exceed_candidate"] >= 80
    # the same distribution as stable: share above its p95 is about equal, never a failure
    same = analyze_step(WindowCounts(stable, _arm(rng, 800)), cfg, weight=50)
    assert same.verdict != Verdict.FAIL
    # 2x slower but only +1 ms at p95: the practical guard keeps it from failing
    fast = ArmCounts.from_samples(800, 0, [0.001] * 800)
    slower = ArmCounts.from_samples(800, 0, [0.002] * 800)
    tiny = analyze_step(WindowCounts(fast, slower), cfg, weight=50)
    assert tiny.verdict != Verdict.FAIL
    assert tiny.metrics[0].detail["p95_guard_met"] is False


def test_quality_is_paired_on_a_common_scale() -> None:
    cfg = AnalysisConfig(metrics=["quality"])
    arm = ArmCounts.from_samples(400, 0, [0.02] * 400)
    worse = PairedQuality(compared=300, agree=250, stable_only=45, candidate_only=5)
    res = analyze_step(WindowCounts(arm, arm, worse), cfg, weight=50)
    m = res.metrics[0]
    assert res.verdict == Verdict.FAIL and m.test == "mcnemar_exact_greater"
    assert m.p_value == pytest.approx(stats.binomtest(45, 50, 0.5, "greater").pvalue)
    better = PairedQuality(300, 250, 5, 45)
    assert analyze_step(WindowCounts(arm, arm, better), cfg, weight=50).verdict == Verdict.PASS
    # no references: agreement with the stable model, disagreement beyond the minimum fails
    unlike = PairedQuality.against_stable(300, 200)
    assert analyze_step(WindowCounts(arm, arm, unlike), cfg, weight=50).verdict == Verdict.FAIL
    alike = PairedQuality.against_stable(300, 295)
    assert analyze_step(WindowCounts(arm, arm, alike), cfg, weight=50).verdict == Verdict.PASS


def test_a_window_below_the_required_sample_is_inconclusive_never_pass() -> None:
    rng = np.random.default_rng(4)
    cfg = AnalysisConfig()
    res = analyze_step(_window(rng, 90, 10), cfg, weight=10)
    assert res.verdict == Verdict.INCONCLUSIVE
    assert any("below the" in r and "power 0.9" in r for r in res.reasons), res.reasons
    for m in res.metrics:
        assert m.required_candidate > m.n_candidate or m.required_stable > m.n_stable
    big = analyze_step(_window(rng, 9000, 3000), cfg, weight=25)
    assert big.verdict == Verdict.PASS, big.reasons
    assert all(m.powered for m in big.metrics)


def test_required_sample_sizes_deliver_the_power_by_simulation() -> None:
    rng = np.random.default_rng(5)
    alpha, power = 0.05, 0.9
    for p0, p1, ratio in ((0.05, 0.13, 1.0), (0.02, 0.04, 3.0), (0.0, 0.05, 1.0)):
        n_c = two_proportion_n(p0, p1, ratio, alpha, power)
        n_s = math.ceil(n_c * ratio)
        hits = sum(
            stats.fisher_exact([[c, n_c - c], [s, n_s - s]], alternative="greater").pvalue < alpha
            for c, s in zip(rng.binomial(n_c, p1, 300), rng.binomial(n_s, p0, 300), strict=True)
        )
        print(f"two_proportion_n({p0}, {p1}, ratio {ratio}) = {n_c}: power {hits / 300:.3f}")
        assert hits / 300 >= power - 0.04
    n = mcnemar_n(0.1, 0.1, alpha, power)
    hits = 0
    for _ in range(300):
        b = int(rng.binomial(n, 0.1))
        hits += b > 0 and stats.binomtest(b, b, 0.5, "greater").pvalue < alpha
    assert hits / 300 >= power - 0.04


def test_missing_metric_data_fails() -> None:
    rng = np.random.default_rng(6)
    w = WindowCounts(_arm(rng, 4000), _arm(rng, 4000), None)  # no paired answers
    res = analyze_step(w, AnalysisConfig(), weight=50)
    assert res.verdict == Verdict.FAIL
    assert any("quality" in r and "no requests answered by both" in r for r in res.reasons)


def test_interim_look_never_passes_and_fails_only_on_clear_regression() -> None:
    rng = np.random.default_rng(7)
    cfg = AnalysisConfig()
    good = analyze_step(_window(rng, 4000, 4000), cfg, weight=50, interim=True)
    assert good.verdict == Verdict.INCONCLUSIVE
    bad = analyze_step(_window(rng, 100, 40, error_rate=0.5), cfg, weight=50, interim=True)
    assert bad.verdict == Verdict.FAIL
    slight = WindowCounts(_arm(rng, 100), ArmCounts.from_samples(20, 2, [0.02] * 18))
    look = analyze_step(slight, AnalysisConfig(metrics=["error_rate"]), interim=True)
    assert look.verdict == Verdict.INCONCLUSIVE  # 2 errors: below fail_fast_min_errors


def test_step_level_splits_alpha_over_the_rollout() -> None:
    rng = np.random.default_rng(8)
    res = analyze_step(_window(rng, 9000, 3000), AnalysisConfig(alpha=0.06), analysed_steps=3)
    assert res.level == pytest.approx(0.02)


def test_holm_adjustment() -> None:
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_window_counts_pair_answers_by_request_key() -> None:
    recs = [
        Record(1.0, "stable", True, 0.01, key="a", answer="0", reference="0"),
        Record(1.5, "stable", True, 0.01, key="b", answer="1", reference="1"),
        Record(2.0, "stable", False, 0.02, key="c"),
        Record(2.5, "candidate", True, 0.03, key="a", answer="2", reference="0"),
        Record(3.0, "candidate", True, 0.03, key="b", answer="1", reference="1"),
        Record(3.5, "candidate", True, 0.03, key="z", answer="1", reference="1"),  # no stable
        Record(9.0, "stable", True, 0.01, key="d", answer="0", reference="0"),
    ]
    w = window_counts(recs, "stable", "candidate", 1.2, 5.0)
    assert (w.stable.requests, w.stable.errors, w.stable.latency.total) == (2, 1, 1)
    assert (w.candidate.requests, w.candidate.errors) == (3, 0)
    # stable answered key a before the window: its answer still pairs with the candidate's
    assert w.quality == PairedQuality(2, 1, 1, 0, "labels")


def test_smoke_bake_against_absolute_slos() -> None:
    cfg = AnalysisConfig(slo_error_rate=0.05, slo_latency_p95_ms=100)
    good = ArmCounts.from_samples(200, 0, [0.02] * 200)
    assert analyze_smoke(good, cfg).verdict == Verdict.PASS
    thin = ArmCounts.from_samples(20, 0, [0.02] * 20)
    res = analyze_smoke(thin, cfg)
    assert res.verdict == Verdict.INCONCLUSIVE  # 0/20 errors cannot show < 5% at 95%
    erring = ArmCounts.from_samples(200, 30, [0.02] * 170)
    assert analyze_smoke(erring, cfg).verdict == Verdict.FAIL
    slow = ArmCounts.from_samples(200, 0, [0.02] * 170 + [0.5] * 30)
    res = analyze_smoke(slow, cfg)
    assert res.verdict == Verdict.FAIL
    assert any("latency_p95" in r and r.startswith("FAIL") for r in res.reasons)
    low, high = clopper_pearson(0, 59)
    assert low == 0.0 and high < 0.05  # 59 clean requests are the least that show < 5%


def test_replayed_requests_carry_a_reference_answer() -> None:
    from pairflow.stages.deploy.replay import attach_references, pair_request, request_headers
    from pairflow.stages.deploy.router import answer_of
    from pairflow.stages.deploy.run import replay_task

    rows = [
        {"id": f"r{i}", "caption": f"a {c} shape", "image_b64": "x", "label": c}
        for i, c in enumerate(["red", "blue", "green", "grey", "pink"])
    ]
    ranked = attach_references(rows, candidates=3, task="rank", variants=2)
    assert len(ranked) == 10 and len({r["key"] for r in ranked}) == 10
    for r in ranked:
        assert len(r["captions"]) == 3 and r["captions"][int(r["reference"])] == r["caption"]
        body = pair_request(r)
        assert [i["caption"] for i in body["instances"]] == r["captions"]
        assert request_headers(r) == {
            "X-Pairflow-Key": r["key"],
            "X-Pairflow-Reference": r["reference"],
        }
    # the two variants of a row rank it among different distractors
    assert ranked[0]["captions"] != ranked[5]["captions"]
    # a model's answer is its top-1 caption; a classifier's, its label
    assert answer_of({"predictions": [{"score": 0.1}, {"score": 0.7}, {"score": 0.2}]}) == "1"
    assert answer_of({"predictions": [{"label": "red", "probabilities": {}}]}) == "red"
    assert answer_of({"predictions": [{"score": 0.3}]}) is None  # one pair: no ranking
    classify = attach_references(rows, candidates=3, task="classify")
    assert [r["reference"] for r in classify] == ["red", "blue", "green", "grey", "pink"]
    body = pair_request(classify[0])
    assert body["task"] == "classify" and body["instances"][0]["image"] == "x"
    assert (replay_task("classifier"), replay_task("clip")) == ("classify", "rank")
