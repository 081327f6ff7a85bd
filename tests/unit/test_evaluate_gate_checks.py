"""The gate fails non-finite outputs and chance-level metrics; ranks match a reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import rankdata

from pairflow.stages.evaluate.finite import nonfinite_outputs
from pairflow.stages.evaluate.gate import accuracy_chance, decide, recall_chance
from pairflow.stages.evaluate.retrieval import (
    clip_retrieval_metrics,
    ranks_of_matches,
    retrieval_metrics,
)
from pairflow.stages.evaluate.scoring import HoldoutScores
from pairflow.stages.evaluate.settings import EvaluateConfig


def _reference_ranks(sim: np.ndarray) -> np.ndarray:
    """Pessimistic ranks by an independent route: scipy's rankdata(method='max') of -row."""
    return np.array([rankdata(-row, method="max")[q] for q, row in enumerate(sim)], dtype=int)


@pytest.mark.parametrize("seed", range(5))
def test_ranks_and_recall_match_an_argsort_reference_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    sim = rng.integers(0, 6, size=(n, n)).astype(float) / 5  # many ties
    ranks = ranks_of_matches(sim)
    assert ranks.tolist() == _reference_ranks(sim).tolist()
    scalars, _ = retrieval_metrics(sim, [1, 5, 10], "i2t")
    for k in (1, 5, 10):
        # reference recall@k: the correct item is among the top k under pessimistic ties
        ref = float(np.mean(_reference_ranks(sim) <= k))
        assert scalars[f"i2t_recall_at_{k}"] == pytest.approx(ref)
    assert scalars["i2t_recall_at_1"] < 0.5  # ties are not hits


def test_nan_and_inf_embeddings_rank_last_never_hit() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(size=(8, 4)).astype(np.float32)
    txt = img.copy()
    img[3] = np.nan
    txt[5, 0] = np.inf
    _, per_query = clip_retrieval_metrics(img, txt, [1, 8])
    # before the fix a NaN query counted 0 items >= itself and scored a hit at every k
    assert per_query["i2t_recall_at_1"][3] == 0.0
    assert per_query["i2t_recall_at_8"][3] == 1.0  # rank n is still within the top n
    assert ranks_of_matches(np.full((4, 4), np.nan)).tolist() == [4, 4, 4, 4]
    all_nan, _ = clip_retrieval_metrics(np.full((5, 3), np.nan), np.full((5, 3), np.nan), [1])
    assert all_nan["i2t_recall_at_1"] == 0.0 and all_nan["t2i_recall_at_1"] == 0.0


def _scores(n: int, bad_image: list[int], bad_text: list[int]) -> HoldoutScores:
    rng = np.random.default_rng(1)
    img = rng.normal(size=(n, 4)).astype(np.float32)
    txt = img.copy()
    img[bad_image] = np.nan
    txt[bad_text, 1] = -np.inf
    return HoldoutScores(
        ok=np.ones(n, dtype=bool),
        image=img,
        text=txt,
        prompts=rng.normal(size=(3, 4)).astype(np.float32),
        logits=None,
    )


def test_non_finite_embeddings_fail_the_gate_naming_count_and_rows() -> None:
    ids = [f"row{i}" for i in range(10)]
    found = nonfinite_outputs(_scores(10, [2, 7], [4]), ids, ["a", "b", "c"])
    assert found == [
        ("candidate image embeddings", 2, 10, ["row2", "row7"]),
        ("candidate text embeddings", 1, 10, ["row4"]),
    ]
    cfg = EvaluateConfig()
    chances = {
        "i2t_recall_at_1": recall_chance(10),
        "zero_shot_accuracy": accuracy_chance(["a", "b"] * 5),
    }
    # metrics that look perfect cannot rescue a candidate with NaN outputs
    gate = decide(
        "clip",
        {"i2t_recall_at_1": 1.0, "zero_shot_accuracy": 1.0},
        None,
        cfg,
        champion_note="none",
        chances=chances,
        nonfinite=found,
    )
    assert not gate.passed
    assert "FAIL non-finite candidate image embeddings: 2 of 10 rows (row2, row7)" in gate.reasons
    assert "FAIL non-finite candidate text embeddings: 1 of 10 rows (row4)" in gate.reasons
    finite = [c for c in gate.checks if c["check"] == "finite"]
    assert [c["value"] for c in finite] == [2, 1]
    clean = decide(
        "clip",
        {"i2t_recall_at_1": 1.0, "zero_shot_accuracy": 1.0},
        None,
        cfg,
        champion_note="none",
        chances=chances,
        nonfinite=nonfinite_outputs(_scores(10, [], []), ids, ["a", "b", "c"]),
    )
    assert clean.passed


def test_default_floors_sit_above_chance_and_show_it() -> None:
    cfg = EvaluateConfig()  # no explicit floors
    chances = {
        "i2t_recall_at_1": recall_chance(90),
        "zero_shot_accuracy": accuracy_chance(["circle"] * 40 + ["square"] * 30 + ["star"] * 20),
    }
    # a constant model: recall 1/90 (chance), accuracy = majority share 40/90
    chance_level = {"i2t_recall_at_1": 1 / 90, "zero_shot_accuracy": 40 / 90}
    gate = decide("clip", chance_level, None, cfg, champion_note="none", chances=chances)
    assert not gate.passed
    floor_lines = [r for r in gate.reasons if "i2t_recall_at_1" in r]
    assert (
        floor_lines[0].startswith("FAIL")
        and "chance 0.0111 (1/90 held-out queries)" in (floor_lines[0])
    )
    # CLIP zero-shot accuracy is reported against chance, gated only when min_accuracy is set
    acc = next(r for r in gate.reasons if "zero_shot_accuracy" in r)
    assert acc.startswith("INFO") and "NOT above chance 0.4444" in acc
    assert "(majority class 'circle' 40/90 of 3 classes)" in acc
    floors = {c["metric"]: c for c in gate.checks if c["check"] == "floor"}
    assert floors["i2t_recall_at_1"]["threshold"] == pytest.approx(1 / 90 + 0.1 * (1 - 1 / 90))
    assert "zero_shot_accuracy" not in floors
    # a classifier's accuracy floor derives from its majority class
    majority = decide(
        "classifier",
        {"accuracy": 40 / 90},
        None,
        cfg,
        champion_note="none",
        chances={"accuracy": chances["zero_shot_accuracy"]},
    )
    assert not majority.passed
    acc_floor = next(c for c in majority.checks if c["metric"] == "accuracy")
    assert acc_floor["threshold"] == pytest.approx(40 / 90 + 0.1 * (1 - 40 / 90))
    assert acc_floor["chance"] == pytest.approx(40 / 90)
    good = decide(
        "clip",
        {"i2t_recall_at_1": 0.4, "zero_shot_accuracy": 0.7},
        None,
        cfg,
        champion_note="none",
        chances=chances,
    )
    assert good.passed, good.reasons
    # above the floor but not above chance with confidence: 3/6 against a 2-class 0.5 chance
    small = decide(
        "classifier",
        {"accuracy": 0.6},
        None,
        EvaluateConfig(min_accuracy=0.55),
        champion_note="none",
        chances={"accuracy": accuracy_chance(["a", "b"] * 5)},
    )
    assert not small.passed
    assert any("not above chance at 95% confidence" in r for r in small.reasons)


def test_the_chance_check_is_off_only_when_asked_and_says_so() -> None:
    chances = {"i2t_recall_at_1": recall_chance(15)}
    at_chance = {"i2t_recall_at_1": 1 / 15}
    explicit = EvaluateConfig(min_recall_at_1=0.0)
    assert not decide("clip", at_chance, None, explicit, champion_note="-", chances=chances).passed
    off = EvaluateConfig(min_recall_at_1=0.0, require_above_chance=False)
    gate = decide("clip", at_chance, None, off, champion_note="-", chances=chances)
    assert gate.passed and any("(chance check off)" in r for r in gate.reasons)
