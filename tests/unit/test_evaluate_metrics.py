"""Evaluate metrics against hand-computed answers; bootstrap coverage; the gate's decisions."""

from __future__ import annotations

import numpy as np
import pytest

from pairflow.drift.compare import DriftOutcome
from pairflow.stages.evaluate.bootstrap import bootstrap_means, paired_bootstrap
from pairflow.stages.evaluate.classification import (
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
)
from pairflow.stages.evaluate.gate import accuracy_chance, decide, recall_chance
from pairflow.stages.evaluate.retrieval import (
    clip_retrieval_metrics,
    ranks_of_matches,
    retrieval_metrics,
    zero_shot_predictions,
)
from pairflow.stages.evaluate.settings import EvaluateConfig

SIM = np.array([[0.9, 0.1, 0.3], [0.8, 0.5, 0.2], [0.1, 0.7, 0.4]])


def test_ranks_and_recall_on_a_hand_computed_matrix() -> None:
    # image->text: q0 best is itself; q1 has 0.8 above 0.5; q2 has 0.7 above 0.4
    assert ranks_of_matches(SIM).tolist() == [1, 2, 2]
    # text->image (columns): c0 [0.9 .8 .1] -> 1; c1 [.1 .5 .7] -> 2; c2 [.3 .2 .4] -> 1
    assert ranks_of_matches(SIM.T).tolist() == [1, 2, 1]
    scalars, per_query = retrieval_metrics(SIM, [1, 2], "i2t")
    assert scalars["i2t_recall_at_1"] == pytest.approx(1 / 3)
    assert scalars["i2t_recall_at_2"] == 1.0
    assert scalars["i2t_mean_rank"] == pytest.approx(5 / 3)
    assert scalars["i2t_median_rank"] == 2.0
    assert per_query["i2t_recall_at_1"].tolist() == [1.0, 0.0, 0.0]


def test_ties_get_no_credit() -> None:
    assert ranks_of_matches(np.ones((4, 4))).tolist() == [4, 4, 4, 4]
    with pytest.raises(ValueError, match="square"):
        ranks_of_matches(np.ones((2, 3)))


def test_clip_metrics_from_embeddings_both_directions() -> None:
    # unit vectors: image i matches text i except images 1 and 2 point at each other's text
    img = np.eye(3, dtype=np.float32)[[0, 2, 1]]
    txt = np.eye(3, dtype=np.float32)
    scalars, _ = clip_retrieval_metrics(img, txt, [1, 3])
    assert scalars["i2t_recall_at_1"] == pytest.approx(1 / 3)
    assert scalars["t2i_recall_at_1"] == pytest.approx(1 / 3)
    assert scalars["i2t_recall_at_3"] == 1.0
    # the two mismatched pairs: the right item ties with 2 others at 0 -> pessimistic rank 3
    assert scalars["i2t_mean_rank"] == pytest.approx((1 + 3 + 3) / 3)
    prompts = np.eye(3, dtype=np.float32)
    assert zero_shot_predictions(img, prompts).tolist() == [0, 2, 1]


def test_classification_metrics_by_hand() -> None:
    labels = np.array([0, 0, 1, 1, 2])
    preds = np.array([0, 1, 1, 1, 0])
    m = confusion_matrix(labels, preds, 3)
    assert m.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    scalars, cm, correct = classification_metrics(labels, preds, ["a", "b", "c"])
    assert (cm == m).all() and correct.tolist() == [1, 0, 1, 1, 0]
    assert scalars["accuracy"] == pytest.approx(3 / 5)
    assert scalars["precision.a"] == pytest.approx(1 / 2)
    assert scalars["precision.b"] == pytest.approx(2 / 3)
    assert scalars["precision.c"] == 0.0  # never predicted
    assert scalars["recall.a"] == pytest.approx(1 / 2)
    assert scalars["recall.b"] == 1.0
    assert scalars["recall.c"] == 0.0
    # F1: a = 0.5, b = 2 * (2/3) * 1 / (5/3) = 0.8, c = 0
    assert scalars["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_expected_calibration_error_by_hand() -> None:
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
    labels = np.array([0, 1, 1])
    # one row per bin: |1 - 0.9| + |0 - 0.6| + |1 - 0.7| over 3 rows
    assert expected_calibration_error(probs, labels, bins=10) == pytest.approx(1.0 / 3)
    perfect = np.array([[1.0, 0.0], [0.0, 1.0]])
    assert expected_calibration_error(perfect, np.array([0, 1])) == pytest.approx(0.0)


def test_paired_bootstrap_covers_the_true_delta_at_the_nominal_rate() -> None:
    """Simulated paired hit vectors with a known population delta of 0.6 - 0.56 = 0.04."""
    rng = np.random.default_rng(123)
    sims, n, true_delta = 400, 150, 0.6 - (0.8 * 0.6 + 0.2 * 0.4)
    covered = 0
    for s in range(sims):
        a = (rng.random(n) < 0.6).astype(float)
        b = np.where(rng.random(n) < 0.8, a, (rng.random(n) < 0.4).astype(float))
        ci = paired_bootstrap("m", a, b, samples=1000, confidence=0.95, seed=s)
        covered += ci.low <= true_delta <= ci.high
    rate = covered / sims
    assert 0.91 <= rate <= 0.985, rate


def test_bootstrap_means_are_resampled_means() -> None:
    rng = np.random.default_rng(0)
    diff = np.array([0.0, 1.0])
    means = bootstrap_means(diff, 4000, rng)
    assert set(np.unique(means)) <= {0.0, 0.5, 1.0}
    assert means.mean() == pytest.approx(0.5, abs=0.03)


def _hits(n: int, p: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(n) < p).astype(float)


def test_gate_passes_an_equal_candidate_and_blocks_a_worse_one() -> None:
    cfg = EvaluateConfig(min_recall_at_1=0.2, min_accuracy=0.3, non_inferiority_margin=0.01)
    champion = _hits(200, 0.6, 1)
    metrics = {"i2t_recall_at_1": 0.6, "zero_shot_accuracy": 0.5}
    equal = paired_bootstrap("i2t_recall_at_1", champion.copy(), champion)
    assert (equal.delta, equal.low, equal.high) == (0.0, 0.0, 0.0)
    ok = decide("clip", metrics, [equal], cfg, champion_note="champion v1")
    assert ok.passed and ok.enforced
    assert any(r.startswith("PASS non-inferior i2t_recall_at_1") for r in ok.reasons)

    worse_hits = champion * (np.random.default_rng(2).random(200) > 0.15)  # loses ~15%
    worse = paired_bootstrap("i2t_recall_at_1", worse_hits, champion)
    assert worse.high < 0
    bad = decide("clip", metrics, [worse], cfg, champion_note="champion v1")
    assert not bad.passed
    assert any(r.startswith("FAIL inferior i2t_recall_at_1") for r in bad.reasons)


def test_first_run_uses_absolute_minimums_only() -> None:
    cfg = EvaluateConfig(min_recall_at_1=0.5, min_accuracy=0.0)
    ok = decide(
        "clip",
        {"i2t_recall_at_1": 0.6, "zero_shot_accuracy": 0.1},
        None,
        cfg,
        champion_note="no champion (models:/m@champion not found)",
    )
    assert ok.passed
    assert any("first run" in r and "absolute minimums only" in r for r in ok.reasons)
    low = decide("clip", {"i2t_recall_at_1": 0.4}, None, cfg, champion_note="none")
    assert not low.passed
    assert any(
        r.startswith("FAIL i2t_recall_at_1 = 0.4000") and "minimum 0.5000 (explicit)" in r
        for r in low.reasons
    )
    nan = decide("classifier", {"accuracy": float("nan")}, None, cfg, champion_note="none")
    assert not nan.passed  # a metric that could not be measured never passes


@pytest.mark.parametrize(("policy", "passes"), [("warn", True), ("fail", False)])
def test_drift_policy_warns_or_fails(policy: str, passes: bool) -> None:
    cfg = EvaluateConfig(drift_policy=policy)
    drift = DriftOutcome(True, ["image embeddings: classifier ROC AUC 0.900 > 0.550"])
    decision = decide(
        "clip",
        {"i2t_recall_at_1": 0.5, "zero_shot_accuracy": 0.5},
        None,
        cfg,
        champion_note="none",
        drift=drift,
        chances={
            "i2t_recall_at_1": recall_chance(100),
            "zero_shot_accuracy": accuracy_chance(["a", "b", "c", "d"] * 25),
        },
    )
    assert decision.passed is passes
    tag = "WARN" if passes else "FAIL"
    assert any(r.startswith(f"{tag} drift") for r in decision.reasons)


def test_champion_logits_follow_the_candidate_label_order() -> None:
    from pairflow.stages.evaluate.run import align_logits

    logits = np.array([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])  # champion order b, a, c
    same, note = align_logits(logits, ["b", "a", "c"], ["b", "a", "c"])
    assert same is logits and note == ""
    moved, note = align_logits(logits, ["b", "a", "c"], ["a", "b", "c"])
    assert moved is not None and note == ""
    assert moved.tolist() == [[0.9, 0.1, 0.0], [0.1, 0.8, 0.1]]
    other, note = align_logits(logits, ["b", "a", "c"], ["a", "b", "d"])
    assert other is None and "differ" in note
