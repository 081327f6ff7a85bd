"""compress on fusion classifiers (``pairflow.stages.train`` artifacts): the classify path exported
to ONNX with logit parity, int8 variants, accuracy as the variant metric, classifier
distillation through the train loop, and ``load_variant(...).classify`` for every kind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from onnx import numpy_helper

from pairflow.config import SplitConfig
from pairflow.data.sources import read_source
from pairflow.data.split import split_holdout
from pairflow.demo.synthetic import generate_dataset
from pairflow.errors import InputDataError
from pairflow.models.classifier import (
    ClassifierSpec,
    OrtClassifier,
    TorchClassifier,
    check_logit_parity,
    export_classifier,
)
from pairflow.models.errors import CompressError, ParityError, VariantError
from pairflow.models.formats import HEAD_ONNX_FILE, META_FILE
from pairflow.models.heads import build_head
from pairflow.models.latency import load_held_out
from pairflow.models.open import open_model
from pairflow.models.scratch import build_processor, tiny_clip
from pairflow.models.trained import TrainedModel, save_trained
from pairflow.models.variants import LoadedVariant, VariantIndex, VariantRecord
from pairflow.stages.compress.build import CompressResult, compress_model
from pairflow.stages.compress.settings import CompressConfig

pytestmark = pytest.mark.slow

HOLDOUT = 0.3
SPLIT = SplitConfig(holdout_fraction=HOLDOUT)
ALL = ["fp32_torch", "fp32_onnx", "int8_onnx", "int8_static_onnx", "student_fp32", "student_int8"]


def _classifier(root: Path, df: pd.DataFrame, fusion: str) -> Path:
    processor = build_processor([str(c) for c in df["caption"]])
    clip = tiny_clip(processor.tokenizer, seed=1)
    labels = sorted({str(v) for v in df["label"]})
    torch.manual_seed(0)
    head = build_head(clip, fusion, len(labels))
    return save_trained(
        root / f"model_{fusion}", clip, processor, kind="classifier", labels=labels, head=head
    )


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("cls-data")
    gen = generate_dataset(root / "data", 96, seed=5, defects=False)
    return read_source(str(gen.manifest), "parquet")


@pytest.fixture(scope="module")
def cross_attention(
    rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, Path, CompressResult]:
    root = tmp_path_factory.mktemp("cls-ca")
    model = _classifier(root, rows, "cross_attention")
    cfg = CompressConfig(
        distill=True,
        latency_repeats=3,
        latency_batch_sizes=[1, 8],
        selection_batch_size=8,
        # a narrower student: its fusion head is rebuilt on the new shapes, not copied
        student={"epochs": 1, "batch_size": 16, "width_factor": 0.5},
        calibration_size=16,
    )
    out = root / "compressed"
    result = compress_model(model, rows, cfg, out, split=SPLIT)
    return model, out, result


def load_variant(out: Path, name: str = "auto", threads: int | None = None) -> LoadedVariant:
    """Variant ``name`` of a compressed directory as ``open_model`` opens it."""
    loaded = open_model(out, variant=name, threads=threads).loaded_variant
    assert loaded is not None
    return loaded


def load_trained(model: str | Path) -> TrainedModel:
    """The trained artifact at ``model`` as ``open_model`` opens it."""
    trained = open_model(model, variant="torch").trained
    assert trained is not None
    return trained


def _held_batch(rows: pd.DataFrame, model: Path) -> tuple[Any, np.ndarray, np.ndarray, list[str]]:
    trained = load_trained(model)
    _, held = split_holdout(rows, HOLDOUT)
    h = load_held_out(held, trained.clip.processor, trained.clip.max_text_length)
    assert trained.labels is not None
    targets = np.asarray(
        [trained.labels.index(v) for v in held.set_index("id").loc[h.ids, "label"]]
    )
    return h, targets, np.concatenate([b[0] for b in h.batches]), trained.labels


def test_classifier_variants_are_measured_by_accuracy_and_classify_when_loaded(
    cross_attention: tuple[Path, Path, CompressResult], rows: pd.DataFrame
) -> None:
    model, out, result = cross_attention
    index = VariantIndex.read(out)
    assert [v.name for v in index.variants] == ALL
    assert index.task == "classifier" and index.labels == sorted(set(rows["label"]))
    assert index.selection["metric"] == "accuracy"
    fp32 = index.get("fp32_onnx")
    assert fp32.metrics["parity"]["argmax_mismatches"] == 0
    assert fp32.metrics["parity"]["logits_max_abs_diff"] < 1e-3
    assert {"vision.onnx", "text.onnx", HEAD_ONNX_FILE, "classifier.json"} <= set(fp32.files)
    assert "fusion_head.safetensors" in index.get("fp32_torch").files
    assert "| accuracy |" in result.table and "recall@1" not in result.table

    held, targets, _, labels = _held_batch(rows, model)
    ref = load_variant(out, "fp32_torch").classify(*held.batches[0])
    for v in index.variants:
        loaded = load_variant(out, v.name, threads=1)
        assert loaded.labels == labels
        logits = np.concatenate([loaded.classify(*b) for b in held.batches])
        assert logits.shape == (held.rows, len(labels))
        # the recorded accuracy is what the loaded variant really scores on the held-out rows
        assert v.metrics["accuracy"] == pytest.approx(
            float(np.mean(logits.argmax(1) == targets)), abs=1e-4
        )
        assert v.metrics["accuracy_delta"] == pytest.approx(
            v.metrics["accuracy"] - index.get("fp32_torch").metrics["accuracy"], abs=1e-4
        )
        if v.name == "fp32_onnx":
            np.testing.assert_array_equal(logits[: len(ref)].argmax(1), ref.argmax(1))
            np.testing.assert_allclose(logits[: len(ref)], ref, atol=1e-3)


def test_classifier_student_is_distilled_smaller_with_its_own_fusion_head(
    cross_attention: tuple[Path, Path, CompressResult],
) -> None:
    model, out, result = cross_attention
    index = VariantIndex.read(out)
    assert result.distill is not None
    assert result.distill["steps"] >= 1
    assert 0.0 <= result.distill["best_val_metric"] <= 1.0  # validation accuracy
    teacher, student = index.get("fp32_torch").metrics, index.get("student_fp32").metrics
    assert student["params"] <= 0.5 * teacher["params"]
    meta = json.loads((out / "student_fp32" / META_FILE).read_text())
    assert meta["kind"] == "classifier" and meta["fusion"] == {"kind": "cross_attention"}
    trained = load_trained(out / "student_fp32")
    assert trained.head is not None and trained.head.kind == "cross_attention"
    # the student's towers are narrower than the teacher's
    teacher_cfg: Any = load_trained(model).clip.model.config
    student_cfg: Any = trained.clip.model.config
    assert student_cfg.vision_config.hidden_size < teacher_cfg.vision_config.hidden_size


def test_clip_variant_has_no_classify(tmp_path: Path, rows: pd.DataFrame) -> None:
    from pairflow.models.scratch import save_untrained_clip

    clip_dir = save_untrained_clip(tmp_path / "clip", [str(c) for c in rows["caption"]], seed=1)
    index = VariantIndex(
        chosen="fp32_torch", variants=[VariantRecord(name="fp32_torch", kind="torch", files=[])]
    )
    (tmp_path / "compressed").mkdir()
    shutil.move(clip_dir, tmp_path / "compressed" / "fp32_torch")
    index.write(tmp_path / "compressed")
    loaded = load_variant(tmp_path / "compressed")
    assert loaded.labels is None
    with pytest.raises(VariantError, match="is a CLIP, not a classifier"):
        loaded.classify(
            np.zeros((1, 3, 64, 64), np.float32),
            np.ones((1, 4), np.int64),
            np.ones((1, 4), np.int64),
        )


def test_concat_head_exports_with_parity_and_a_corrupted_head_fails_it(
    rows: pd.DataFrame, tmp_path: Path
) -> None:
    model = _classifier(tmp_path, rows, "concat")
    trained = load_trained(model)
    assert trained.head is not None and trained.labels is not None
    held, _, _, _ = _held_batch(rows, model)
    out = tmp_path / "onnx"
    export_classifier(
        trained.clip.model,
        trained.head,
        ClassifierSpec(trained.labels, "concat"),
        out,
        held.batches[0],
    )
    torch_runner, ort_runner = TorchClassifier(trained), OrtClassifier(out)
    parity = check_logit_parity(torch_runner, ort_runner, held.batches, 1e-3, "concat")
    assert parity.argmax_mismatches == 0 and parity.rows == held.rows
    # batch and sequence axes are dynamic: a batch of 3 with a shorter sequence runs
    px, ids, mask = held.batches[0]
    small = (px[:3], ids[:3, :5], mask[:3, :5])
    np.testing.assert_allclose(
        ort_runner.classify(*small), torch_runner.classify(*small), atol=1e-4
    )
    graph = onnx.load(str(out / HEAD_ONNX_FILE))
    last = [t for t in graph.graph.initializer if len(t.dims) == 2][-1]
    flipped = -numpy_helper.to_array(last) * 50
    last.CopyFrom(numpy_helper.from_array(flipped.astype(np.float32), last.name))
    onnx.save(graph, str(out / HEAD_ONNX_FILE))
    with pytest.raises(ParityError, match="ONNX classifier fails parity"):
        check_logit_parity(torch_runner, OrtClassifier(out), held.batches, 1e-3, "concat")


def test_unknown_fusion_or_stray_weights_are_refused_not_dropped(
    rows: pd.DataFrame, tmp_path: Path
) -> None:
    model = _classifier(tmp_path, rows, "gated")
    bad = tmp_path / "bilinear"
    shutil.copytree(model, bad)
    meta = json.loads((bad / META_FILE).read_text())
    meta["fusion"] = {"kind": "bilinear"}
    (bad / META_FILE).write_text(json.dumps(meta))
    cfg = CompressConfig(int8=False)
    with pytest.raises(CompressError, match="fusion head 'bilinear'"):
        compress_model(bad, rows, cfg, tmp_path / "o1", split=SPLIT)
    stray = tmp_path / "stray"
    shutil.copytree(model, stray)
    (stray / "adapter_model.safetensors").write_bytes(b"\0")
    with pytest.raises(CompressError, match=r"adapter_model\.safetensors"):
        compress_model(stray, rows, cfg, tmp_path / "o2", split=SPLIT)
    unlabelled = rows.drop(columns=["label"])
    with pytest.raises(InputDataError, match="'label' column"):
        compress_model(model, unlabelled, cfg, tmp_path / "o3", split=SPLIT)
