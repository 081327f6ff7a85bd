"""The sink's parsing: a logged request + its marked response → record rows.

The request body is read exactly as the predictor reads it (:mod:`pairflow.serve.v2_rest`
and :mod:`pairflow.serve.limits`): V1 JSON (``image`` base64, ``{"b64": ...}``), V2 JSON
(base64 text) or the V2 binary extension (raw image bytes in BYTES elements). For a binary
body the JSON head length comes from the event's ``Inference-Header-Content-Length`` metadata
(``logger.metadataHeaders``), else from the end of the head's JSON object.
The response holds the monitor payload (:mod:`pairflow.serve.requestlog.mark`): V2
``parameters.pairflow_monitor`` (a JSON string), V1 top-level ``pairflow_monitor``.

Malformed bodies raise :class:`~pairflow.serve.requestlog.cloudevents.EventError` naming the
problem.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from pairflow.serve.limits import ParsedRequest, RequestError, image_payload, parse_v1, parse_v2
from pairflow.serve.requestlog.cloudevents import HEADER_LENGTH_METADATA, EventError
from pairflow.serve.requestlog.mark import PAYLOAD_FORMAT, PAYLOAD_KEY, fp16_from_b64
from pairflow.serve.v2_rest import input_values, parse_infer_body

# Caption tokens counted as validate does (pairflow.stages.validate.captions._TOKEN).
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class LoggedRequest:
    """A parsed request event: its instances as sent (images not yet decoded)."""

    parsed: ParsedRequest
    size: int  # bytes of the body, for the pending-buffer bound


@dataclass
class Row:
    """One record row plus the image bytes to store (``None`` when not available)."""

    values: dict[str, Any]
    image: bytes | None
    dim: int

    @property
    def size(self) -> int:
        return len(self.image or b"") + 4 * self.dim + 512


def json_head_end(body: bytes) -> int:
    """Length of the JSON object at the start of ``body`` (a V2 binary-extension head)."""
    if not body.startswith(b"{"):
        raise EventError("body: does not start with a JSON object")
    depth = 0
    in_string = False
    escaped = False
    for i, byte in enumerate(body):
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte == 0x7B:  # {
            depth += 1
        elif byte == 0x7D:  # }
            depth -= 1
            if depth == 0:
                return i + 1
    raise EventError("body: the JSON object at its start is not closed")


def _head_length(body: bytes, metadata: dict[str, list[str]]) -> int | None:
    values = metadata.get(HEADER_LENGTH_METADATA.lower())
    if values:
        return int(values[0]) if values[0].isdigit() else -1
    end = json_head_end(body)
    return end if end < len(body) else None


def parse_request(body: bytes, metadata: dict[str, list[str]]) -> LoggedRequest:
    """A logged request body (V1 or V2, JSON or binary) → its instances."""
    if not body:
        raise EventError("request event: empty body")
    try:
        length = _head_length(body, metadata)
        head = body if length is None else body[: max(length, 0)]
        doc = json.loads(head)
        if isinstance(doc, dict) and "inputs" in doc:
            req = parse_infer_body(body, None if length is None else str(length), "logged")
            inputs = [(i.name, i.datatype, list(i.shape), input_values(i)) for i in req.inputs]
            parsed = parse_v2(inputs, req.parameters)
        else:
            parsed = parse_v1(doc)
    except ValueError as exc:  # JSON errors
        raise EventError(f"request event: body is not a V1/V2 inference request ({exc})") from exc
    except RequestError as exc:
        raise EventError(f"request event: {exc}") from exc
    return LoggedRequest(parsed, len(body))


def parse_response(body: bytes) -> dict[str, Any] | None:
    """The monitor payload of a logged response, or None when the response is unmarked."""
    if PAYLOAD_KEY.encode() not in body:
        return None
    try:
        doc = json.loads(body[: json_head_end(body)])
    except ValueError as exc:
        raise EventError(f"response event: body is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise EventError("response event: body is not a JSON object")
    payload: Any = doc.get(PAYLOAD_KEY)
    if payload is None:
        params = doc.get("parameters")
        if isinstance(params, dict) and PAYLOAD_KEY in params:
            text = params[PAYLOAD_KEY]
            if not isinstance(text, str):
                raise EventError(f"response event: parameters.{PAYLOAD_KEY} is not a string")
            try:
                payload = json.loads(text)
            except ValueError as exc:
                raise EventError(
                    f"response event: parameters.{PAYLOAD_KEY} is not JSON ({exc})"
                ) from exc
    if payload is None:
        return None
    return check_payload(payload)


def check_payload(payload: Any) -> dict[str, Any]:
    """The monitor payload, checked field by field (EventError naming the first bad one)."""
    if not isinstance(payload, dict):
        raise EventError(f"{PAYLOAD_KEY}: expected an object")
    if payload.get("format") != PAYLOAD_FORMAT:
        raise EventError(
            f"{PAYLOAD_KEY}.format: {payload.get('format')!r}, expected {PAYLOAD_FORMAT!r}"
        )
    for key, kind in (
        ("request_id", str),
        ("model_name", str),
        ("model_version", str),
        ("task", str),
        ("ts_ms", int),
        ("dim", int),
        ("instances", list),
    ):
        if not isinstance(payload.get(key), kind):
            raise EventError(f"{PAYLOAD_KEY}.{key}: expected {kind.__name__}")
    if payload["dim"] < 0:
        raise EventError(f"{PAYLOAD_KEY}.dim: negative")
    for i, inst in enumerate(payload["instances"]):
        if not isinstance(inst, dict):
            raise EventError(f"{PAYLOAD_KEY}.instances[{i}]: expected an object")
        for name in ("image_emb", "text_emb"):
            value = inst.get(name)
            if value is not None:
                if not isinstance(value, str):
                    raise EventError(f"{PAYLOAD_KEY}.instances[{i}].{name}: expected base64")
                try:
                    inst[name] = fp16_from_b64(value, payload["dim"], f"instances[{i}].{name}")
                except ValueError as exc:
                    raise EventError(f"{PAYLOAD_KEY}: {exc}") from exc
    return payload


def build_rows(
    request: LoggedRequest, payload: dict[str, Any], *, image_uri: Any = None
) -> list[Row]:
    """Rows of one request/response pair; ``image_uri(sha256, format) -> str`` names where
    an image will be stored (None: images are not stored)."""
    raws = request.parsed.instances
    insts = payload["instances"]
    if len(raws) != len(insts):
        raise EventError(
            f"request has {len(raws)} instances, its response's payload {len(insts)}: "
            "not the same request"
        )
    ts = datetime.fromtimestamp(payload["ts_ms"] / 1000.0, tz=UTC)
    rows = []
    for i, (raw, inst) in enumerate(zip(raws, insts, strict=True)):
        image: bytes | None = None
        sent = raw.image_b64 if raw.image_b64 is not None else raw.image_bytes
        if sent is not None:
            try:
                image = image_payload(sent, f"instances[{i}].image")
            except RequestError as exc:
                raise EventError(f"request event: {exc}") from exc
            digest = hashlib.sha256(image).hexdigest()
            if inst.get("image_sha256") != digest:
                raise EventError(
                    f"instances[{i}]: the request's image has sha256 {digest[:12]}..., the "
                    f"response's payload {str(inst.get('image_sha256'))[:12]}...: not the same "
                    "request"
                )
        caption = raw.caption
        uri = ""
        if image is not None and image_uri is not None:
            uri = str(image_uri(inst["image_sha256"], inst.get("image_format")))
        values = {
            "request_id": payload["request_id"],
            "instance": i,
            "ts": ts,
            "model_name": payload["model_name"],
            "model_version": payload["model_version"],
            "task": payload["task"],
            "image_sha256": inst.get("image_sha256"),
            "image_bytes": inst.get("image_bytes"),
            "image_format": inst.get("image_format"),
            "width": inst.get("width"),
            "height": inst.get("height"),
            "image_uri": uri,
            "caption": caption,
            "caption_chars": None if caption is None else len(caption),
            "caption_tokens": None if caption is None else len(_TOKEN.findall(caption)),
            "score": inst.get("score"),
            "label": inst.get("label"),
            "image_emb": _emb(inst.get("image_emb")),
            "text_emb": _emb(inst.get("text_emb")),
        }
        rows.append(Row(values, image if uri else None, int(payload["dim"])))
    return rows


def _emb(value: Any) -> np.ndarray | None:
    return value if isinstance(value, np.ndarray) else None
