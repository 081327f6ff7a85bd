"""CloudEvents as KServe's payload logger sends them, written (local emitter) and read (sink).

Checked against kserve/kserve ``pkg/logger/`` (commit aaac4e29, 2026-08): ``handler.go`` takes
the event id from the request's ``Ce-Id`` header or a new uuid, queues the request body with
type ``org.kubeflow.serving.inference.request`` and, only for a 200 answer, the response body
with type ``org.kubeflow.serving.inference.response`` under the same id; *both* carry the
request's ``Content-Type``. ``worker.go`` sends them with the Go SDK (cloudevents/sdk-go v2) in
binary content mode: ``ce-specversion: 1.0``, ``ce-id``, ``ce-type``, ``ce-source`` (the pod
name, ``--source-uri``), ``ce-time`` and the extensions ``ce-inferenceservicename``,
``ce-namespace``, ``ce-component``, ``ce-endpoint``, ``ce-metadata`` (JSON of the request
headers named in ``logger.metadataHeaders``, Go-canonical names, each a list of values) and
``ce-recordedtime``; the body is the payload as it was on the wire.

Structured mode (``application/cloudevents+json``, ``data`` or ``data_base64``) is read too.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

SPECVERSION = "1.0"
REQUEST_TYPE = "org.kubeflow.serving.inference.request"
RESPONSE_TYPE = "org.kubeflow.serving.inference.response"
STRUCTURED = "application/cloudevents+json"
# The V2 binary extension's JSON head length; KServe forwards it only when listed in
# logger.metadataHeaders (Go canonical header name).
HEADER_LENGTH_METADATA = "Inference-Header-Content-Length"


class EventError(ValueError):
    """A body that is not a well-formed inference CloudEvent (the sink answers 400)."""


@dataclass(frozen=True)
class Event:
    """One logged request or response."""

    id: str
    type: str
    source: str
    content_type: str
    data: bytes
    time: str = ""
    metadata: dict[str, list[str]] = field(default_factory=dict)
    inference_service: str = ""
    namespace: str = ""
    component: str = ""
    endpoint: str = ""


def rfc3339(ts: datetime) -> str:
    """A UTC timestamp as the Go SDK writes ``ce-time`` (RFC 3339, nanosecond precision)."""
    return ts.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def binary_headers(event: Event, recorded: datetime | None = None) -> dict[str, str]:
    """HTTP headers of ``event`` in binary content mode (the body is ``event.data``)."""
    headers = {
        "ce-specversion": SPECVERSION,
        "ce-id": event.id,
        "ce-type": event.type,
        "ce-source": event.source,
        "ce-inferenceservicename": event.inference_service,
        "ce-namespace": event.namespace,
        "ce-component": event.component,
        "ce-endpoint": event.endpoint,
        "ce-metadata": json.dumps(event.metadata, separators=(",", ":")),
        "ce-recordedtime": rfc3339(recorded or datetime.now(UTC)),
    }
    if event.time:
        headers["ce-time"] = event.time
    if event.content_type:
        headers["content-type"] = event.content_type
    return headers


def parse_event(headers: Mapping[str, str], body: bytes) -> Event:
    """An inference CloudEvent from an HTTP request (binary or structured mode)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    content_type = lowered.get("content-type", "")
    if content_type.split(";")[0].strip().lower() == STRUCTURED:
        return _structured(body)
    attrs = {k[3:]: v for k, v in lowered.items() if k.startswith("ce-")}
    if not attrs:
        raise EventError(
            "not a CloudEvent: no ce-* headers (binary mode) and content-type is not "
            f"{STRUCTURED} (structured mode)"
        )
    return _event(attrs, content_type, body)


def _structured(body: bytes) -> Event:
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise EventError(f"structured CloudEvent: body is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise EventError("structured CloudEvent: body is not a JSON object")
    attrs = {str(k).lower(): v for k, v in doc.items() if k not in ("data", "data_base64")}
    for key, value in attrs.items():
        if not isinstance(value, str):
            attrs[key] = json.dumps(value) if key == "metadata" else str(value)
    if "data_base64" in doc:
        try:
            data = base64.b64decode(str(doc["data_base64"]), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise EventError(f"structured CloudEvent: data_base64 is not base64 ({exc})") from exc
    elif "data" in doc:
        value = doc["data"]
        data = value.encode("utf-8") if isinstance(value, str) else json.dumps(value).encode()
    else:
        data = b""
    return _event(attrs, str(attrs.get("datacontenttype", "")), data)


def _event(attrs: Mapping[str, str], content_type: str, data: bytes) -> Event:
    missing = [k for k in ("specversion", "id", "type", "source") if not attrs.get(k)]
    if missing:
        raise EventError(f"CloudEvent: missing attribute(s) {', '.join(missing)}")
    if attrs["specversion"] != SPECVERSION:
        raise EventError(f"CloudEvent: specversion {attrs['specversion']!r}, expected 1.0")
    if attrs["type"] not in (REQUEST_TYPE, RESPONSE_TYPE):
        raise EventError(
            f"CloudEvent type {attrs['type']!r}: expected {REQUEST_TYPE} or {RESPONSE_TYPE}"
        )
    return Event(
        id=attrs["id"],
        type=attrs["type"],
        source=attrs["source"],
        content_type=content_type,
        data=data,
        time=attrs.get("time", ""),
        metadata=_metadata(attrs.get("metadata", "")),
        inference_service=attrs.get("inferenceservicename", ""),
        namespace=attrs.get("namespace", ""),
        component=attrs.get("component", ""),
        endpoint=attrs.get("endpoint", ""),
    )


def _metadata(text: str) -> dict[str, list[str]]:
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise EventError(f"CloudEvent metadata: not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise EventError("CloudEvent metadata: expected a JSON object of header lists")
    out: dict[str, list[str]] = {}
    for name, values in doc.items():
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise EventError(f"CloudEvent metadata {name!r}: expected a list of strings")
        out[str(name).lower()] = list(values)
    return out
