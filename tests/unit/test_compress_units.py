"""Compress building blocks: selection rule, student shape, KD loss, recall, calibration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from pairflow.models.errors import (
    CalibrationError,
    CompressError,
    LatencyBudgetError,
    StudentConfigError,
)
from pairflow.models.latency import fair_latency_env, recall_at_1
from pairflow.stages.compress.distill import build_student, kd_kl, kept_layers, student_config
from pairflow.stages.compress.quantize import quantize_static_vision
from pairflow.stages.compress.select import choose_variant, enforce_latency_budget
from pairflow.stages.compress.settings import CompressConfig, StudentConfig


def _m(recall_delta: float, p50: float, size: int) -> dict[str, object]:
    return {
        "recall_delta": recall_delta,
        "size_bytes": size,
        "latency_ms": {"32": {"p50_ms": p50}},
    }


METRICS = {
    "fp32_torch": _m(0.0, 100.0, 1000),
    "fp32_onnx": _m(0.0, 60.0, 1000),
    "int8_onnx": _m(-0.005, 30.0, 260),
    "student_int8": _m(-0.05, 10.0, 100),  # fastest and smallest but loses 5 points
}


def test_fastest_within_drop_skips_variants_losing_too_much_recall() -> None:
    choice = choose_variant(METRICS, "fastest", 0.01, 32)
    assert choice.name == "int8_onnx"
    assert "student_int8" not in choice.eligible
    assert choose_variant(METRICS, "fastest", 0.06, 32).name == "student_int8"


def test_latency_budget_against_the_champion() -> None:
    # champion p50 28 ms, +10%: int8_onnx (30 ms) fits, fp32 variants do not
    fits = choose_variant(METRICS, "smallest", 0.01, 32, champion_p50_ms=28.0, max_slowdown=0.1)
    assert fits.name == "int8_onnx" and fits.eligible == ["int8_onnx"]
    assert fits.budget is not None and fits.budget["met"] is True
    assert fits.budget["limit_ms"] == 30.8 and "within the latency budget" in fits.reason
    # a distilled champion at 10 ms: nothing within the quality drop fits; the fastest
    # eligible ships and the budget is recorded as not met, with the numbers
    over = choose_variant(METRICS, "fastest", 0.01, 32, champion_p50_ms=10.0, max_slowdown=0.1)
    assert over.name == "int8_onnx" and over.budget is not None
    assert over.budget["met"] is False and over.budget["chosen_p50_ms"] == 30.0
    assert "latency budget not met" in over.reason and "11.00 ms" in over.reason
    assert over.to_dict()["latency_budget"]["champion_p50_ms"] == 10.0
    # no champion (first run): no budget
    assert choose_variant(METRICS, "fastest", 0.01, 32, max_slowdown=0.1).budget is None


def test_a_missed_latency_budget_stops_compress_unless_the_canary_is_asked_to_judge() -> None:
    over = choose_variant(METRICS, "fastest", 0.01, 32, champion_p50_ms=10.0, max_slowdown=0.1)
    with pytest.raises(LatencyBudgetError) as err:
        enforce_latency_budget(over, "stop", "out/variants.md")
    text = str(err.value)
    for part in ("11.00 ms", "int8_onnx at 30.00 ms", "out/variants.md", "=canary"):
        assert part in text, text
    enforce_latency_budget(over, "canary", "out/variants.md")  # ships, budget not met
    fits = choose_variant(METRICS, "fastest", 0.01, 32, champion_p50_ms=28.0, max_slowdown=0.1)
    enforce_latency_budget(fits, "stop", "out/variants.md")  # met: nothing to stop
    enforce_latency_budget(choose_variant(METRICS, "fastest", 0.01, 32), "stop", "x")  # no champion
    with pytest.raises(CompressError, match="unknown policy"):
        enforce_latency_budget(over, "maybe", "x")
    assert CompressConfig().on_latency_budget_miss == "stop"


def test_smallest_and_fixed_rules() -> None:
    assert choose_variant(METRICS, "smallest", 0.01, 32).name == "int8_onnx"
    assert choose_variant(METRICS, "fp32_torch", 1.0, 32).name == "fp32_torch"


def test_selection_without_baseline_is_an_error() -> None:
    with pytest.raises(CompressError, match="fp32_torch"):
        choose_variant({"int8_onnx": METRICS["int8_onnx"]}, "fastest", 0.01, 32)


def test_selection_batch_size_must_be_measured() -> None:
    with pytest.raises(ValueError, match="selection_batch_size"):
        CompressConfig(latency_batch_sizes=[1, 8], selection_batch_size=32)


@pytest.fixture(scope="module")
def teacher() -> object:
    from transformers import CLIPConfig, CLIPModel

    tower = {"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 2}
    cfg = CLIPConfig(
        text_config={**tower, "num_attention_heads": 4, "vocab_size": 300},
        vision_config={**tower, "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        projection_dim=32,
    )
    return CLIPModel(cfg)


def test_default_student_keeps_width_and_vision_depth_and_has_under_half_the_params(
    teacher: object,
) -> None:
    from pairflow.models.towers import count_parameters

    s = student_config(teacher.config, StudentConfig())  # type: ignore[attr-defined]
    vision: Any = s.vision_config
    text: Any = s.text_config
    assert vision.hidden_size == 64 and vision.num_hidden_layers == 2
    assert text.hidden_size == 64 and text.num_hidden_layers == 1 and text.vocab_size == 300
    assert vision.intermediate_size == text.intermediate_size == 32
    assert s.projection_dim == 32
    student = build_student(teacher, StudentConfig())  # type: ignore[arg-type]
    assert count_parameters(student) <= 0.5 * count_parameters(teacher)  # type: ignore[arg-type]


def test_kept_layers_are_spread_and_end_with_the_last() -> None:
    assert kept_layers(12, 6) == [0, 2, 4, 7, 9, 11]
    assert kept_layers(4, 2) == [0, 3]
    assert kept_layers(2, 1) == [1]
    assert kept_layers(3, 3) == [0, 1, 2]


def test_student_inherits_the_teachers_weights_and_most_important_mlp_neurons(
    teacher: object,
) -> None:
    t: Any = teacher
    student: Any = build_student(t, StudentConfig(mlp_factor=0.25))
    t_layer, s_layer = t.text_model.encoder.layers[1], student.text_model.encoder.layers[0]
    assert torch.equal(s_layer.self_attn.q_proj.weight, t_layer.self_attn.q_proj.weight)
    assert torch.equal(s_layer.mlp.fc2.bias, t_layer.mlp.fc2.bias)
    score = t_layer.mlp.fc1.weight.norm(dim=1) * t_layer.mlp.fc2.weight.norm(dim=0)
    top = torch.sort(torch.topk(score, 64).indices).values
    assert torch.equal(s_layer.mlp.fc1.weight, t_layer.mlp.fc1.weight[top])
    assert torch.equal(s_layer.mlp.fc1.bias, t_layer.mlp.fc1.bias[top])
    assert torch.equal(s_layer.mlp.fc2.weight, t_layer.mlp.fc2.weight[:, top])
    for name in ("text_projection", "visual_projection"):
        assert torch.equal(getattr(student, name).weight, getattr(t, name).weight)
    emb = "text_model.embeddings.token_embedding.weight"
    assert torch.equal(student.state_dict()[emb], t.state_dict()[emb])
    random_init: Any = build_student(t, StudentConfig(mlp_factor=0.25, init_from_teacher=False))
    assert not torch.equal(random_init.visual_projection.weight, t.visual_projection.weight)


def test_inherited_student_computes_the_teacher_when_the_dropped_layer_is_a_no_op(
    teacher: object,
) -> None:
    """Zero the residual branches of teacher layer 0: the 1-layer student built from layer 1
    must then give the teacher's embeddings exactly (the copy is exact, not approximate)."""
    import copy

    t: Any = copy.deepcopy(teacher)
    with torch.no_grad():
        for tower in (t.text_model, t.vision_model):
            layer = tower.encoder.layers[0]
            for lin in (layer.self_attn.out_proj, layer.mlp.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
    t.train(False)
    student: Any = build_student(t, StudentConfig(mlp_factor=1.0, vision_layer_factor=0.5))
    student.train(False)
    pixels = torch.randn(3, 3, 32, 32)
    ids = torch.randint(1, 299, (3, 7))
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for a, b in (
            (
                student.get_image_features(pixel_values=pixels),
                t.get_image_features(pixel_values=pixels),
            ),
            (
                student.get_text_features(input_ids=ids, attention_mask=mask),
                t.get_text_features(input_ids=ids, attention_mask=mask),
            ),
        ):
            a = a if isinstance(a, torch.Tensor) else a.pooler_output
            b = b if isinstance(b, torch.Tensor) else b.pooler_output
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("shape", "problem"),
    [
        ({"hidden_size": 128}, "hidden size 128 is larger"),
        ({"num_layers": 3}, "3 layers"),
        ({"intermediate_size": 512}, "MLP size 512 is larger"),
    ],
)
def test_student_larger_than_teacher_is_refused(
    teacher: object, shape: dict[str, int], problem: str
) -> None:
    with pytest.raises(StudentConfigError, match=problem):
        build_student(teacher, StudentConfig(**shape))  # type: ignore[arg-type]


def test_student_as_large_as_teacher_is_refused(teacher: object) -> None:
    same = StudentConfig(hidden_size=64, num_layers=2, mlp_factor=1.0)
    with pytest.raises(StudentConfigError, match="not fewer than the teacher"):
        build_student(teacher, same)  # type: ignore[arg-type]


def test_kd_loss_is_zero_for_identical_logits_and_grows_with_disagreement() -> None:
    logits = torch.randn(8, 8)
    assert float(kd_kl(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    near = float(kd_kl(logits + 0.1 * torch.randn(8, 8), logits, 2.0))
    far = float(kd_kl(-logits, logits, 2.0))
    assert 0 < near < far


def test_recall_at_1_counts_rows_whose_best_caption_is_their_own() -> None:
    eye = np.eye(4, dtype=np.float32)
    swapped = eye[[1, 0, 2, 3]]
    assert recall_at_1(eye, eye, ["a", "b", "c", "d"]) == 1.0
    assert recall_at_1(eye, swapped, ["a", "b", "c", "d"]) == 0.5
    # identical captions are equally right
    assert recall_at_1(eye, swapped, ["a", "a", "c", "d"]) == 1.0


def test_empty_calibration_set_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match=r"calibration set .* is empty"):
        quantize_static_vision(tmp_path / "v.onnx", tmp_path / "q.onnx", [], ["MatMul"])


def test_calibration_from_no_rows_names_the_source() -> None:
    from pairflow.stages.compress.build import calibration_pixels

    empty = pd.DataFrame({"id": [], "image": [], "caption": []})
    with pytest.raises(CalibrationError, match="no holdout rows"):
        calibration_pixels(empty, object(), 77, 16, None, "holdout")  # type: ignore[arg-type]


def test_classifier_selection_uses_accuracy_delta() -> None:
    acc = {
        name: {**m, "accuracy_delta": m["recall_delta"], "recall_delta": 0.0}
        for name, m in METRICS.items()
    }
    choice = choose_variant(acc, "fastest", 0.01, 32, metric="accuracy")
    assert choice.name == "int8_onnx" and "accuracy of fp32" in choice.reason
    with pytest.raises(KeyError):  # a clip metric table has no accuracy_delta
        choose_variant(METRICS, "fastest", 0.01, 32, metric="accuracy")


def test_unsupported_fusion_kind_is_a_clear_error() -> None:
    from pairflow.models.classifier import check_fusion

    check_fusion("cross_attention", "m")
    with pytest.raises(CompressError, match=r"fusion head 'bilinear'.*refusing"):
        check_fusion("bilinear", "m")


def test_default_int8_op_types_quantize_the_token_embedding() -> None:
    assert "Gather" in CompressConfig().int8_op_types


def test_latency_process_env_gives_torch_the_threads_and_no_spinning() -> None:
    env = fair_latency_env(2)
    assert env["OMP_NUM_THREADS"] == "2" and env["MKL_NUM_THREADS"] == "2"
    assert env["OMP_WAIT_POLICY"] == "PASSIVE"
