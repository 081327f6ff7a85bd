"""The model card builder, the variant index reader and the retry policy."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST

from pairflow.clipfilter.bootstrap import save_untrained_clip
from pairflow.registry.card import CardInputs, build_model_card
from pairflow.registry.register_version import gate_status
from pairflow.registry.retry import RegistryUnavailable, with_retries
from pairflow.registry.variants import resolve_variants
from pairflow.report import StageReport


def test_card_without_inputs_states_what_is_missing() -> None:
    card = build_model_card(CardInputs(model_name="m"))
    for missing in (
        "no evaluate report with a gate decision",
        "no stage reports were given",
        "no evaluate report",
        "no compressed variants",
        "no drift summary",
        "not stated in config",
    ):
        assert f"_not available: {missing}" in card


def test_card_renders_rejects_intervals_and_variants() -> None:
    reports = {
        "validate": StageReport(stage="validate", rows_in=10, rows_out=7, rejected={"corrupt": 3}),
        "ingest": StageReport(stage="ingest", rows_in=10, rows_out=10),
    }
    evaluate = StageReport(
        stage="evaluate",
        rows_in=7,
        rows_out=7,
        metrics={
            "gate": {"passed": False, "enforced": True, "reasons": ["recall dropped"]},
            "retrieval": {"recall_at_1": {"delta": -0.05, "ci": [-0.09, -0.01]}},
            "drift": {"share_drifted": 0.5},
        },
    )
    card = build_model_card(
        CardInputs(
            model_name="m",
            reports=reports,
            evaluate=evaluate,
            variants=[{"variant": "int8_onnx", "kind": "onnx", "chosen": True}],
            chosen_variant="int8_onnx",
        )
    )
    assert card.index("| ingest |") < card.index("| validate | 10 | 7 | 3 | corrupt: 3 |")
    assert "Gate: **failed**" in card and "- recall dropped" in card
    assert "| retrieval.recall_at_1 | -0.05 | [-0.09, -0.01] |" in card
    assert "| share_drifted | 0.5 |" in card and "**int8_onnx**" in card


def test_unenforced_or_unimplemented_gate_is_not_passed() -> None:
    stub = StageReport(
        stage="evaluate",
        rows_in=1,
        rows_out=1,
        implemented=False,
        metrics={"gate": {"passed": True, "enforced": False, "reasons": []}},
    )
    assert gate_status(stub)[0] == "not_enforced"
    assert gate_status(None)[0] == "unknown"


def test_variant_index_picks_chosen_and_falls_back_to_torch_for_onnx(tmp_path: Path) -> None:
    root = tmp_path / "compressed"
    save_untrained_clip(root / "fp32_torch", ["a red circle", "a blue square"])
    (root / "int8_onnx").mkdir()
    (root / "int8_onnx" / "vision.onnx").write_bytes(b"x")
    index = {
        "chosen": "int8_onnx",
        "variants": [
            {"name": "fp32_torch", "kind": "torch", "metrics": {"size_bytes": 10}},
            {"name": "int8_onnx", "kind": "onnx", "metrics": {"size_bytes": 3}},
        ],
    }
    (root / "variants.json").write_text(json.dumps(index))
    found = resolve_variants(root, None)
    assert found.chosen.name == "int8_onnx" and found.hf_dir == root / "fp32_torch"
    assert [v.name for v in found.others] == ["fp32_torch"]
    assert found.table()[0] == {
        "variant": "int8_onnx",
        "kind": "onnx",
        "chosen": True,
        "size_bytes": 3,
    }
    index["chosen"] = "missing"
    (root / "variants.json").write_text(json.dumps(index))
    with pytest.raises(Exception, match="chosen variant 'missing' is not listed"):
        resolve_variants(root, None)


def test_retries_back_off_then_fail_with_the_operation_named() -> None:
    delays: list[float] = []
    calls = {"n": 0}

    def flaky() -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise MlflowException("API request failed: connection refused")
        return "ok"

    assert with_retries(flaky, "op", 4, 0.5, sleep=delays.append) == "ok"
    assert delays == [0.5, 1.0]

    def down() -> None:
        raise MlflowException("503 Service Unavailable")

    with pytest.raises(RegistryUnavailable, match="set alias failed after 3 attempts"):
        with_retries(down, "set alias", 2, 0.1, sleep=delays.append)

    def refused() -> None:
        raise MlflowException("no such model", error_code=RESOURCE_DOES_NOT_EXIST)

    delays.clear()
    with pytest.raises(MlflowException, match="no such model"):
        with_retries(refused, "get", 5, 0.1, sleep=delays.append)
    assert delays == []


def test_pyfunc_labels_come_from_a_trained_classifier_head(tmp_path: Path) -> None:
    """The pyfunc on a pairflow.train classifier artifact (loaded as MLflow would: from the
    artifact folders; the context object is the only stand-in)."""
    from types import SimpleNamespace

    import torch

    from pairflow.clipfilter.bootstrap import build_processor, tiny_clip
    from pairflow.registry.logged_model import example_input
    from pairflow.registry.pyfunc_model import PairClipModel
    from pairflow.train.artifact import save_trained
    from pairflow.train.models import build_head

    captions = ["a red circle", "a blue square"]
    processor = build_processor(captions)
    clip = tiny_clip(processor.tokenizer)
    head = build_head(clip, "concat", 2)
    with torch.no_grad():
        for p in head.parameters():
            p.zero_()
        last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
        last.bias.copy_(torch.tensor([0.0, 5.0]))  # always "square"
    out = save_trained(
        tmp_path / "clf", clip, processor, kind="classifier", labels=["circle", "square"], head=head
    )
    model = PairClipModel()
    model.load_context(SimpleNamespace(artifacts={"hf": str(out)}, model_config={"kind": "torch"}))
    frame = pd.concat([example_input()] * 2, ignore_index=True)
    got = model.run(frame, params={"mode": "labels"})
    assert list(got["label"]) == ["square", "square"]
    assert got["label_score"].iloc[0] == pytest.approx(
        torch.tensor([0.0, 5.0]).softmax(0)[1].item()
    )
    # probabilities over every class, in the registered label order
    assert got["probabilities"].iloc[0] == pytest.approx(
        torch.tensor([0.0, 5.0]).softmax(0).tolist()
    )
    with pytest.raises(ValueError, match="needs both image and caption"):
        model.run(frame[["image"]], params={"mode": "labels"})
