"""The KServe predictor in-process: readiness, V1/V2 tasks, metrics, and an ONNX variant."""

from __future__ import annotations

import asyncio
import base64
import gc
import io
from pathlib import Path

import numpy as np
import pytest
from kserve.errors import InvalidInput
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse
from PIL import Image
from prometheus_client import REGISTRY

from pairflow.models.scratch import save_untrained_clip
from pairflow.serve.limits import parse_v1
from pairflow.serve.predictor import PairflowPredictor
from pairflow.serve.settings import ServeConfig

CAPTIONS = ["a red circle", "two blue squares on the left", "a green triangle", "three stars"]


def b64_png(colour: tuple[int, int, int], size: int = 48) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained_clip(tmp_path_factory.mktemp("clip") / "clip", CAPTIONS, seed=1)


@pytest.fixture(scope="module")
def predictor(clip_dir: Path) -> PairflowPredictor:
    p = PairflowPredictor(
        ServeConfig(model_name="unit", warmup_batches=1, torch_threads=1), str(clip_dir)
    )
    p.load()
    return p


def sample(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_not_ready_until_loaded_and_warmed(clip_dir: Path) -> None:
    p = PairflowPredictor(ServeConfig(model_name="late", warmup_batches=1), str(clip_dir))
    repo = ModelRepository()
    repo.update(p)
    plane = DataPlane(model_registry=repo)
    assert asyncio.run(plane.model_ready("late")) is False
    p.load()
    assert asyncio.run(plane.model_ready("late")) is True
    assert p.metrics.model_version.startswith("local-")


def test_v1_score_matches_direct_cosine_and_counts(predictor: PairflowPredictor) -> None:
    assert predictor.loaded is not None
    version = predictor.metrics.model_version
    labels = {"model_name": "unit", "model_version": version, "protocol": "v1"}
    before = sample("pairflow_predictor_requests_total", labels)
    scores_before = sample(
        "pairflow_predictor_pair_score_count", {"model_name": "unit", "model_version": version}
    )
    image = b64_png((200, 20, 20))
    body = {"instances": [{"image": image, "caption": c} for c in CAPTIONS[:2]]}
    response, _ = asyncio.run(predictor(body))
    model = predictor.loaded.model
    img = model.embed_images([Image.open(io.BytesIO(base64.b64decode(image))).convert("RGB")])
    txt = model.embed_texts(CAPTIONS[:2])
    expected = (txt @ img[0]).tolist()
    got = [p["score"] for p in response["predictions"]]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert response["model_version"] == version
    assert sample("pairflow_predictor_requests_total", labels) == before + 1
    assert sample("pairflow_predictor_latency_seconds_count", labels) >= 1
    assert (
        sample(
            "pairflow_predictor_pair_score_count",
            {"model_name": "unit", "model_version": version},
        )
        == scores_before + 2
    )


def test_v1_bad_input_is_invalid_input_and_counted(predictor: PairflowPredictor) -> None:
    version = predictor.metrics.model_version
    labels = {"model_name": "unit", "model_version": version, "protocol": "v1", "kind": "client"}
    before = sample("pairflow_predictor_errors_total", labels)
    with pytest.raises(InvalidInput, match=r"instances\[0\].image: not valid base64"):
        asyncio.run(predictor({"instances": [{"image": "!!", "caption": "x"}]}))
    assert sample("pairflow_predictor_errors_total", labels) == before + 1


def test_v2_embed_and_classify(predictor: PairflowPredictor) -> None:
    image = InferInput("image", [2], "BYTES", [b64_png((0, 0, 255)), b64_png((0, 255, 0))])
    caption = InferInput("caption", [2], "BYTES", CAPTIONS[:2])
    req = InferRequest("unit", [image, caption], request_id="r1", parameters={"task": "embed"})
    response, _ = asyncio.run(predictor(req))
    assert isinstance(response, InferResponse)
    outputs = {o.name: o for o in response.outputs}
    assert set(outputs) == {"image_embedding", "text_embedding"}
    emb = np.asarray(outputs["text_embedding"].data, dtype=np.float32).reshape(
        outputs["text_embedding"].shape
    )
    assert emb.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    req = InferRequest("unit", [image], request_id="r2", parameters={"task": "classify"})
    response, _ = asyncio.run(predictor(req))
    outputs = {o.name: o for o in response.outputs}
    assert outputs["probabilities"].shape == [2, 4]
    probs = np.asarray(outputs["probabilities"].data).reshape(2, 4)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    labels = ["circle", "square", "triangle", "star"]
    assert list(outputs["label"].data) == [labels[int(i)] for i in probs.argmax(axis=1)]


def test_inline_and_threaded_decoding_agree_and_heap_is_frozen(clip_dir: Path) -> None:
    """Small images decode on the event loop, larger ones on the decode threads: same scores.
    After load the startup heap is frozen (full GC passes skip it)."""
    image = b64_png((10, 200, 30), size=64)
    body = {"instances": [{"image": image, "caption": c} for c in CAPTIONS]}
    scores = []
    for chars in (len(image) * 4, len(image) * 4 - 1):
        p = PairflowPredictor(
            ServeConfig(model_name="inline", warmup_batches=0, inline_decode_chars=chars),
            str(clip_dir),
        )
        p.load()
        assert gc.get_freeze_count() > 0
        parsed = parse_v1(body)
        assert p._decode_inline(parsed) is (chars >= len(image) * 4)
        response, _ = asyncio.run(p(body))
        scores.append([r["score"] for r in response["predictions"]])
        p.stop()
    np.testing.assert_allclose(scores[0], scores[1], atol=1e-6)
