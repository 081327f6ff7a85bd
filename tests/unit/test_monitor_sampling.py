"""Predictor-side sampling and the monitor payload's encoding."""

from __future__ import annotations

import hashlib
import io
import math

import numpy as np
import pytest
from PIL import Image

from pairflow.serve.requestlog.mark import (
    build_payload,
    fp16_b64,
    fp16_from_b64,
    image_facts,
    is_sampled,
    request_key,
)


def test_decision_is_a_function_of_the_id_alone() -> None:
    ids = [f"req-{i}" for i in range(2000)]
    first = [is_sampled(i, 0.3) for i in ids]
    assert first == [is_sampled(i, 0.3) for i in ids]
    # monotone in the rate: sampled at 0.1 implies sampled at 0.3 (same hash threshold)
    assert all(b for a, b in zip([is_sampled(i, 0.1) for i in ids], first, strict=True) if a)
    assert not any(is_sampled(i, 0.0) for i in ids) and all(is_sampled(i, 1.0) for i in ids)
    head = int.from_bytes(hashlib.sha256(b"req-0").digest()[:8], "big") / 2**64
    assert is_sampled("req-0", head + 1e-9) and not is_sampled("req-0", head - 1e-9)


@pytest.mark.parametrize("rate", [0.05, 0.25, 0.5, 0.9])
def test_rate_is_kept_within_binomial_noise(rate: float) -> None:
    n = 20_000
    hits = sum(is_sampled(f"{k:08d}-x", rate) for k in range(n))
    sd = math.sqrt(n * rate * (1 - rate))
    assert abs(hits - n * rate) < 4 * sd, (hits, n * rate)


def test_request_key_order_v2_id_then_ce_id_then_x_request_id() -> None:
    assert request_key("v2-id", {"ce-id": "c", "x-request-id": "x"}) == "v2-id"
    assert request_key(None, {"Ce-Id": "c", "X-Request-Id": "x"}) == "c"
    assert request_key("", {"x-request-id": "x"}) == "x"
    a, b = request_key(None, {}), request_key(None, None)
    assert a != b and len(a) == 32


def test_fp16_round_trip_and_width_check() -> None:
    v = np.random.default_rng(1).standard_normal(16).astype(np.float32)
    text = fp16_b64(v)
    assert text is not None
    np.testing.assert_array_equal(fp16_from_b64(text, 16, "x"), v.astype(np.float16))
    with pytest.raises(ValueError, match=r"image_emb: 32 bytes, expected 34 \(17 fp16 values\)"):
        fp16_from_b64(text, 17, "instances[0].image_emb")
    assert fp16_b64(None) is None


def test_payload_holds_digest_upright_size_and_embeddings() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (1, 2, 3)).save(buf, "PNG")
    data = buf.getvalue()
    facts = image_facts(data, Image.new("RGB", (20, 30)))  # decoded (EXIF-rotated) size wins
    assert facts.sha256 == hashlib.sha256(data).hexdigest() and facts.n_bytes == len(data)
    assert (facts.format, facts.width, facts.height) == ("PNG", 20, 30)
    assert (image_facts(data, None).width, image_facts(data, None).height) == (30, 20)
    img, txt = np.ones(4, np.float32) / 2, np.zeros(4, np.float32)
    payload = build_payload(
        key="k",
        model_name="m",
        model_version="3",
        task="score",
        dim=4,
        images=[facts, None],
        outputs=[(img, txt), (None, txt)],
        results=[{"score": 0.5}, {"score": 0.1}],
    )
    first, second = payload["instances"]
    assert first["image_sha256"] == facts.sha256 and first["score"] == 0.5
    assert second["image_sha256"] is None and second["image_emb"] is None
    np.testing.assert_array_equal(fp16_from_b64(first["image_emb"], 4, "x"), img)
    assert payload["dim"] == 4 and payload["model_version"] == "3"
