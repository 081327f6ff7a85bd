"""The predictor in-process: sampled responses carry the monitor payload, unsampled ones are
unchanged, and marking is off unless the logger or a local sink asks for it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kserve.protocol.infer_type import InferInput, InferRequest, InferResponse
from PIL import Image

from pairflow.models.scratch import save_untrained_clip
from pairflow.serve.predictor import PairflowPredictor
from pairflow.serve.requestlog.mark import PAYLOAD_KEY, fp16_from_b64, is_sampled
from pairflow.serve.settings import ServeConfig
from pairflow.stages.monitor.settings import MonitorConfig

CAPTIONS = ["a red circle", "a blue square"]


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (40, 24), colour).save(buf, "PNG")
    return buf.getvalue()


IMAGES = [_png((200, 20, 20)), _png((20, 20, 200))]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained_clip(tmp_path_factory.mktemp("clip") / "clip", CAPTIONS, seed=2)


def _predictor(clip_dir: Path, *, mark: bool, rate: float) -> PairflowPredictor:
    p = PairflowPredictor(
        ServeConfig(model_name="mark", warmup_batches=0, torch_threads=1, mark_for_logger=mark),
        str(clip_dir),
        monitor=MonitorConfig(sample_rate=rate),
    )
    p.load()
    return p


def _v2(request_id: str) -> InferRequest:
    images = InferInput("image", [2], "BYTES", IMAGES)
    captions = InferInput("caption", [2], "BYTES", CAPTIONS)
    return InferRequest("mark", [images, captions], request_id=request_id)


def _v1() -> dict[str, Any]:
    return {
        "instances": [
            {"image": base64.b64encode(i).decode(), "caption": c}
            for i, c in zip(IMAGES, CAPTIONS, strict=True)
        ]
    }


def test_marking_is_off_unless_asked(clip_dir: Path) -> None:
    p = _predictor(clip_dir, mark=False, rate=1.0)  # no logger, no sink_url
    v1, _ = asyncio.run(p(_v1(), {"ce-id": "a"}))
    assert set(v1) == {"predictions", "model_version"}
    v2, _ = asyncio.run(p(_v2("a")))
    assert isinstance(v2, InferResponse) and not v2.parameters


def test_sampled_responses_carry_the_payload_and_others_are_unchanged(clip_dir: Path) -> None:
    p = _predictor(clip_dir, mark=True, rate=0.5)
    ids = [f"id-{k}" for k in range(12)]
    sampled = [i for i in ids if is_sampled(i, 0.5)]
    assert 0 < len(sampled) < len(ids)
    for request_id in ids:
        v2, _ = asyncio.run(p(_v2(request_id)))
        v1, _ = asyncio.run(p(_v1(), {"x-request-id": request_id}))
        if request_id not in sampled:
            assert not v2.parameters and PAYLOAD_KEY not in v1
            continue
        payload = json.loads(v2.parameters[PAYLOAD_KEY])
        assert v1[PAYLOAD_KEY]["request_id"] == payload["request_id"] == request_id
        scores = v2.outputs[0].data
        for k, inst in enumerate(payload["instances"]):
            assert inst["image_sha256"] == hashlib.sha256(IMAGES[k]).hexdigest()
            assert (inst["image_format"], inst["width"], inst["height"]) == ("PNG", 40, 24)
            assert inst["score"] == pytest.approx(scores[k], abs=1e-6)
            img = fp16_from_b64(inst["image_emb"], payload["dim"], "image_emb")
            txt = fp16_from_b64(inst["text_emb"], payload["dim"], "text_emb")
            assert float(np.dot(img, txt)) == pytest.approx(scores[k], abs=5e-3)
        assert payload["model_version"] == v2.model_version and payload["task"] == "score"
