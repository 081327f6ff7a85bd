"""Serve loads what the other stages write: compress's ``variants.json`` (any variant, default
the chosen one), the registry's pyfunc layout, and train's classifier artifact (own head)."""

from __future__ import annotations

import asyncio
import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from kserve.errors import InvalidInput
from PIL import Image

from pairflow.models.errors import ModelLoadError
from pairflow.models.export import export_towers
from pairflow.models.open import (
    TorchClip,
    TrainedClassifier,
    VariantModel,
    open_model,
    sized_pixels,
)
from pairflow.models.scratch import save_untrained_clip
from pairflow.models.variants import VariantIndex, VariantRecord
from pairflow.serve.predictor import PairflowPredictor
from pairflow.serve.settings import ServeConfig

CAPTIONS = ["a red circle", "two blue squares on the left", "a green triangle", "three stars"]
IMAGES = [Image.new("RGB", (50, 40), c) for c in ((255, 0, 0), (0, 0, 90), (9, 200, 9))]


def _b64(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained_clip(tmp_path_factory.mktemp("clip") / "clip", CAPTIONS, seed=3)


@pytest.fixture(scope="module")
def compressed(clip_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A compressed-model directory in compress's format (fp32_torch + fp32_onnx, chosen onnx),
    nested two folders deep as a download would be."""
    root = tmp_path_factory.mktemp("compressed") / "artifacts" / "compressed"
    shutil.copytree(clip_dir, root / "fp32_torch")
    clip = open_model(clip_dir).clip
    pixels = torch.from_numpy(
        np.asarray(
            clip.processor.image_processor(images=IMAGES[:2], return_tensors="np")["pixel_values"]
        )
    )
    enc = clip.processor.tokenizer(CAPTIONS[:2], padding=True, return_tensors="pt")
    export_towers(clip.model, root / "fp32_onnx", pixels, enc["input_ids"], enc["attention_mask"])
    clip.processor.save_pretrained(root / "fp32_onnx")
    VariantIndex(
        chosen="fp32_onnx",
        variants=[
            VariantRecord(name="fp32_torch", kind="torch", files=[]),
            VariantRecord(name="fp32_onnx", kind="onnx", files=[], chosen=True),
        ],
    ).write(root)
    return root.parent.parent


@pytest.mark.slow  # the ONNX export of the compressed fixture: ~15-30 s on 2 cores
def test_compressed_dir_loads_chosen_or_named_variant(compressed: Path, clip_dir: Path) -> None:
    ref = open_model(clip_dir)
    assert isinstance(ref.model, TorchClip)
    chosen = open_model(compressed, threads=1)
    assert isinstance(chosen.model, VariantModel)
    assert chosen.model.loaded.name == "fp32_onnx" and chosen.model.loaded.kind == "onnx"
    assert chosen.version.startswith("local-") and chosen.path is not None
    assert chosen.path.name == "fp32_onnx" and chosen.kind == "clip" and chosen.labels is None
    assert chosen.location.record is not None and chosen.location.record.chosen
    named = open_model(str(compressed), variant="fp32_torch", threads=1)
    assert isinstance(named.model, VariantModel) and named.model.loaded.kind == "torch"
    assert named.clip.path == named.path  # a torch variant exposes its CLIP towers
    for m in (chosen, named):
        np.testing.assert_allclose(m.embed_images(IMAGES), ref.embed_images(IMAGES), atol=1e-4)
        np.testing.assert_allclose(m.embed_texts(CAPTIONS), ref.embed_texts(CAPTIONS), atol=1e-4)
    with pytest.raises(ModelLoadError, match="is not a torch CLIP"):
        _ = chosen.clip
    with pytest.raises(ModelLoadError, match=r"no variant 'int8_onnx'.*fp32_onnx"):
        open_model(str(compressed), variant="int8_onnx")
    # one ONNX variant folder opens on its own (as the registry's pyfunc artifact does)
    alone = open_model(compressed / "artifacts" / "compressed" / "fp32_onnx", threads=1)
    assert alone.location.layout == "onnx" and alone.runtime == "onnx"
    np.testing.assert_allclose(alone.embed_texts(CAPTIONS), ref.embed_texts(CAPTIONS), atol=1e-4)


@pytest.mark.slow
def test_registered_layout_loads_its_shipping_variant(
    compressed: Path, clip_dir: Path, tmp_path: Path
) -> None:
    """The registry logs a pyfunc: MLmodel config {variant, kind}, artifacts/variant + hf."""
    model = tmp_path / "download" / "model"
    shutil.copytree(
        compressed / "artifacts" / "compressed" / "fp32_onnx", model / "artifacts" / "variant"
    )
    shutil.copytree(clip_dir, model / "artifacts" / "hf")
    conf = {"flavors": {"python_function": {"config": {"variant": "fp32_onnx", "kind": "onnx"}}}}
    (model / "MLmodel").write_text(yaml.safe_dump(conf))
    loaded = open_model(str(tmp_path / "download"), threads=1)
    assert isinstance(loaded.model, VariantModel) and loaded.model.loaded.kind == "onnx"
    assert loaded.model.variant.startswith("fp32_onnx")
    torch_side = open_model(str(tmp_path / "download"), variant="torch")
    assert isinstance(torch_side.model, TorchClip)
    assert torch_side.path is not None and torch_side.path.name == "hf"
    with pytest.raises(ModelLoadError, match="ships variant 'fp32_onnx' only"):
        open_model(str(tmp_path / "download"), variant="int8_onnx")


def test_hf_dir_refuses_unknown_variant(clip_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match="variant 'fp32_onnx' is not available"):
        open_model(str(clip_dir), variant="fp32_onnx")


def test_classifier_artifact_classifies_with_its_head_and_labels(
    clip_dir: Path, tmp_path: Path
) -> None:
    from pairflow.models.heads import build_head
    from pairflow.models.trained import save_trained

    labels = ["circle", "square", "star"]
    clip = open_model(clip_dir).clip
    torch.manual_seed(0)
    head = build_head(clip.model, "concat", len(labels))
    for p in head.parameters():
        torch.nn.init.normal_(p, std=0.5)  # distinct logits per input
    out = save_trained(
        tmp_path / "clf", clip.model, clip.processor, kind="classifier", labels=labels, head=head
    )
    pred = PairflowPredictor(
        ServeConfig(model_name="clf", warmup_batches=1, torch_threads=1), str(out)
    )
    pred.load()
    assert pred.loaded is not None and isinstance(pred.loaded.model, TrainedClassifier)
    body = {
        "task": "classify",
        "instances": [
            {"image": _b64(i), "caption": c} for i, c in zip(IMAGES, CAPTIONS, strict=False)
        ],
    }
    response, _ = asyncio.run(pred(body))
    got = np.asarray([[r["probabilities"][lab] for lab in labels] for r in response["predictions"]])
    opened = open_model(out)
    assert opened.kind == "classifier" and opened.labels == labels
    trained = opened.trained
    assert trained is not None
    px = torch.from_numpy(
        np.asarray(
            trained.clip.processor.image_processor(images=IMAGES, return_tensors="np")[
                "pixel_values"
            ]
        )
    )
    enc = trained.clip.processor.tokenizer(CAPTIONS[:3], padding=True, return_tensors="pt")
    want = torch.softmax(trained.classify(px, enc["input_ids"], enc["attention_mask"]), -1)
    np.testing.assert_allclose(got, want.numpy(), atol=1e-4)
    mine = torch.softmax(torch.from_numpy(opened.classify(IMAGES, CAPTIONS[:3])), -1)
    np.testing.assert_allclose(mine.numpy(), want.numpy(), atol=1e-4)
    assert [r["label"] for r in response["predictions"]] == [labels[int(i)] for i in got.argmax(1)]
    with pytest.raises(InvalidInput, match=r"instances\[0\].*needs an image and a caption"):
        asyncio.run(pred({"task": "classify", "instances": [{"image": _b64(IMAGES[0])}]}))
    # embeddings still come from the classifier's CLIP towers
    emb, _ = asyncio.run(pred({"task": "embed", "instances": [{"caption": "a red circle"}]}))
    vec = np.asarray(emb["predictions"][0]["text_embedding"])
    assert vec.shape == (64,) and abs(float(np.linalg.norm(vec)) - 1.0) < 1e-5


def test_registered_variant_follows_the_mlmodel_artifact_table(tmp_path: Path) -> None:
    """MLflow stores a pyfunc artifact under its source folder's name, not under its key."""
    from pairflow.models.locate import registered_variant

    model = tmp_path / "artifacts"
    (model / "artifacts" / "int8_onnx").mkdir(parents=True)
    (model / "artifacts" / "fp32_torch").mkdir()
    (model / "MLmodel").write_text(
        "flavors:\n"
        "  python_function:\n"
        "    artifacts:\n"
        "      hf: {path: artifacts/fp32_torch, uri: /elsewhere/fp32_torch}\n"
        "      variant: {path: artifacts/int8_onnx, uri: /elsewhere/int8_onnx}\n"
        "    config: {kind: onnx, variant: int8_onnx}\n"
    )
    found = registered_variant(tmp_path)
    assert found == (
        "int8_onnx",
        "onnx",
        model / "artifacts" / "int8_onnx",
        model / "artifacts" / "fp32_torch",
    )


def test_sized_pixels_equal_the_processor_and_defer_otherwise(clip_dir: Path) -> None:
    """The numpy fast path for images already at the model's size gives the processor's
    pixel values; other sizes or modes are left to the processor (``None``)."""
    proc = open_model(clip_dir).processor.image_processor
    side = int(proc.crop_size["height"])
    rng = np.random.default_rng(3)
    images = [
        Image.fromarray(rng.integers(0, 255, size=(side, side, 3), dtype=np.uint8))
        for _ in range(3)
    ]
    fast = sized_pixels(proc, images)
    assert fast is not None
    expected = np.asarray(proc(images=images, return_tensors="np")["pixel_values"], np.float32)
    assert fast.shape == expected.shape == (3, 3, side, side)
    np.testing.assert_allclose(fast, expected, atol=1e-5)
    assert sized_pixels(proc, [*images, images[0].resize((side - 8, side))]) is None
    assert sized_pixels(proc, [images[0].convert("L")]) is None
    assert sized_pixels(proc, []) is None
