"""Request logging, predictor side: which requests are sampled, and the payload that marks them.

KServe's payload logger (``spec.predictor.logger``) sends the bodies the client sees, and a
``score`` response holds no embeddings; so for a *sampled* request the response carries a
compact monitor payload, and ``pairflow monitor-sink`` joins it to the logged request (which
holds the caption and the image bytes). Unsampled responses are unchanged, and nothing is
hashed for them.

- V2 responses: ``parameters["pairflow_monitor"]``, a JSON string (V2 parameters are scalars);
- V1 responses: a top-level ``"pairflow_monitor"`` object.

The decision is deterministic in the request id (V2 ``id``, else the ``ce-id`` header, else
``x-request-id``, else a fresh uuid): the first 8 bytes of sha256(id) as an integer, below
``rate * 2**64``. The same id is always decided the same way, by any process.

Payload (``PAYLOAD_FORMAT``)::

    {"format": "pairflow-monitor/1", "request_id": ..., "model_name": ..., "model_version": ...,
     "task": "score", "ts_ms": 1767225600000, "dim": 64,
     "instances": [{"image_sha256": ..., "image_bytes": 1234, "image_format": "PNG",
                    "width": 64, "height": 64, "score": 0.31, "label": null,
                    "image_emb": "<base64 of fp16 little-endian>", "text_emb": ...}]}
"""

from __future__ import annotations

import base64
import hashlib
import io
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

PAYLOAD_KEY = "pairflow_monitor"
PAYLOAD_FORMAT = "pairflow-monitor/1"
_SCALE = float(2**64)


def request_key(request_id: str | None, headers: Mapping[str, str] | None) -> str:
    """The id a request is sampled by: V2 ``id``, ``ce-id``, ``x-request-id``, or a new uuid."""
    if request_id:
        return request_id
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    for name in ("ce-id", "x-request-id"):
        value = lowered.get(name)
        if value:
            return value
    return uuid.uuid4().hex


def is_sampled(key: str, rate: float) -> bool:
    """Whether the request ``key`` is logged at sample rate ``rate`` (deterministic in ``key``)."""
    if rate <= 0.0:
        return False
    if rate >= 1.0:
        return True
    head = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return head < rate * _SCALE


def fp16_b64(vector: np.ndarray | None) -> str | None:
    """An embedding as base64 of its little-endian fp16 values (None stays None)."""
    if vector is None:
        return None
    return base64.b64encode(np.asarray(vector, dtype="<f2").tobytes()).decode("ascii")


def fp16_from_b64(text: str, dim: int, where: str) -> np.ndarray:
    """Inverse of :func:`fp16_b64`; ``ValueError`` naming ``where`` when it is not ``dim`` wide."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError as exc:
        raise ValueError(f"{where}: not base64 ({exc})") from exc
    if len(raw) != 2 * dim:
        raise ValueError(f"{where}: {len(raw)} bytes, expected {2 * dim} ({dim} fp16 values)")
    return np.frombuffer(raw, dtype="<f2").astype(np.float16)


@dataclass(frozen=True)
class ImageFacts:
    """What the log keeps of a request image: digest, size in bytes, format, upright size."""

    sha256: str
    n_bytes: int
    format: str
    width: int
    height: int


def image_facts(data: bytes, image: Image.Image | None) -> ImageFacts:
    """Digest and header facts of ``data`` (the bytes as sent); ``image``: its decoded pixels
    (upright size), when at hand, else the size declared in the header."""
    header = Image.open(io.BytesIO(data))
    fmt = str(header.format or "UNKNOWN")
    width, height = image.size if image is not None else header.size
    return ImageFacts(hashlib.sha256(data).hexdigest(), len(data), fmt, width, height)


def build_payload(
    *,
    key: str,
    model_name: str,
    model_version: str,
    task: str,
    dim: int,
    images: Sequence[ImageFacts | None],
    outputs: Sequence[tuple[np.ndarray | None, np.ndarray | None]],
    results: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The monitor payload of one sampled request (one entry per instance)."""
    instances = []
    for facts, (img, txt), result in zip(images, outputs, results, strict=True):
        instances.append(
            {
                "image_sha256": facts.sha256 if facts else None,
                "image_bytes": facts.n_bytes if facts else None,
                "image_format": facts.format if facts else None,
                "width": facts.width if facts else None,
                "height": facts.height if facts else None,
                "score": result.get("score"),
                "label": result.get("label"),
                "image_emb": fp16_b64(img),
                "text_emb": fp16_b64(txt),
            }
        )
    return {
        "format": PAYLOAD_FORMAT,
        "request_id": key,
        "model_name": model_name,
        "model_version": model_version,
        "task": task,
        "ts_ms": int(time.time() * 1000),
        "dim": dim,
        "instances": instances,
    }
