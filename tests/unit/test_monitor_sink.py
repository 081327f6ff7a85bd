"""The sink's pairing, parsing and buffering, in process over a local folder; the emitter's
CloudEvents headers and its drops (a real HTTP recorder and a closed port)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image
from tests.local_http import BackgroundHTTPServer

from pairflow.serve.requestlog import emitter as emitter_mod
from pairflow.serve.requestlog import sink as sink_mod
from pairflow.serve.requestlog.cloudevents import (
    HEADER_LENGTH_METADATA,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    EventError,
    parse_event,
)
from pairflow.serve.requestlog.emitter import EventEmitter, LoggedPair
from pairflow.serve.requestlog.mark import PAYLOAD_KEY, build_payload, image_facts
from pairflow.serve.requestlog.sink import SinkState
from pairflow.serve.requestlog.sink_rows import json_head_end, parse_request
from pairflow.serve.requestlog.sink_store import StorageError
from pairflow.serve.requestlog.window import read_window
from pairflow.stages.monitor.settings import MonitorConfig

DIM = 8


def _png(colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 12), colour).save(buf, "PNG")
    return buf.getvalue()


IMG = _png((200, 10, 10))


def _payload(key: str, image: bytes = IMG, n: int = 1) -> dict[str, Any]:
    v = np.full(DIM, 0.25, np.float32)
    return build_payload(
        key=key,
        model_name="pf",
        model_version="7",
        task="score",
        dim=DIM,
        images=[image_facts(image, None)] * n,
        outputs=[(v, v)] * n,
        results=[{"score": 0.5}] * n,
    )


def _ce(event_id: str, ce_type: str, **extra: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": ce_type,
        "ce-source": "pod-1",
        "content-type": "application/json",
        **extra,
    }


def _v1_request(caption: str = "a red box") -> bytes:
    body = {"instances": [{"image": base64.b64encode(IMG).decode(), "caption": caption}]}
    return json.dumps(body).encode()


def _v1_response(payload: dict[str, Any] | None) -> bytes:
    doc: dict[str, Any] = {"predictions": [{"score": 0.5}], "model_version": "7"}
    if payload is not None:
        doc[PAYLOAD_KEY] = payload
    return json.dumps(doc).encode()


def _state(prefix: Path, **kw: Any) -> SinkState:
    monitor = MonitorConfig(log_prefix=str(prefix), flush_rows=1000, max_buffer_rows=3)
    return SinkState(monitor, None, **kw)


def _window(prefix: Path) -> Any:
    now = datetime.now(UTC)
    return read_window(str(prefix), now - timedelta(hours=1), now + timedelta(hours=1))


def test_pairs_in_either_order_and_skips_unsampled(tmp_path: Path) -> None:
    state = _state(tmp_path / "logs")
    assert state.accept(_ce("a", RESPONSE_TYPE), _v1_response(_payload("a"))) == "held"
    assert state.accept(_ce("a", REQUEST_TYPE), _v1_request()) == "buffered 1 rows"
    assert state.accept(_ce("b", REQUEST_TYPE), _v1_request()) == "held"
    assert state.accept(_ce("b", RESPONSE_TYPE), _v1_response(_payload("b"))) == "buffered 1 rows"
    # unsampled: the response comes first and absorbs its request, or the other way round
    assert state.accept(_ce("c", RESPONSE_TYPE), _v1_response(None)) == "held"
    assert state.accept(_ce("c", REQUEST_TYPE), _v1_request()) == "unsampled"
    assert state.accept(_ce("d", REQUEST_TYPE), _v1_request()) == "held"
    assert state.accept(_ce("d", RESPONSE_TYPE), _v1_response(None)) == "unsampled"
    assert not state.pending and state.pending_bytes == 0
    assert state.flush() == 2
    table = _window(tmp_path / "logs")
    assert sorted(table.column("request_id").to_pylist()) == ["a", "b"]
    row = table.to_pylist()[0]
    assert row["caption"] == "a red box" and row["caption_tokens"] == 3
    assert row["image_uri"].endswith(f"/images/{hashlib.sha256(IMG).hexdigest()}.png")
    assert Path(row["image_uri"]).read_bytes() == IMG


def test_unpaired_events_expire_and_are_counted(tmp_path: Path) -> None:
    state = _state(tmp_path / "logs", pair_ttl_s=0.05)
    before = sink_mod.UNPAIRED.labels("request")._value.get()
    state.accept(_ce("x", REQUEST_TYPE), _v1_request())
    time.sleep(0.1)
    state.accept(_ce("y", REQUEST_TYPE), _v1_request())  # expiry runs on arrival
    assert list(state.pending) == ["y"]
    assert sink_mod.UNPAIRED.labels("request")._value.get() == before + 1


def test_a_response_that_is_not_its_requests_is_refused(tmp_path: Path) -> None:
    state = _state(tmp_path / "logs")
    state.accept(_ce("m", REQUEST_TYPE), _v1_request())
    with pytest.raises(EventError, match=r"sha256 .* not the same request"):
        state.accept(_ce("m", RESPONSE_TYPE), _v1_response(_payload("m", _png((1, 2, 3)))))
    state.accept(_ce("n", REQUEST_TYPE), _v1_request())
    with pytest.raises(EventError, match="1 instances, its response's payload 2"):
        state.accept(_ce("n", RESPONSE_TYPE), _v1_response(_payload("n", n=2)))
    with pytest.raises(EventError, match=r"second org\.kubeflow\.serving\.inference\.request"):
        state.accept(_ce("o", REQUEST_TYPE), _v1_request())
        state.accept(_ce("o", REQUEST_TYPE), _v1_request())


def _v2_binary(image: bytes, caption: str) -> tuple[bytes, int]:
    """A V2 body as tritonclient.http writes it (JSON head, then BYTES tensors)."""
    img = struct.pack("<I", len(image)) + image
    cap = struct.pack("<I", len(caption.encode())) + caption.encode()
    head = json.dumps(
        {
            "id": "q",
            "parameters": {"task": "score"},
            "inputs": [
                {
                    "name": "image",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(img)},
                },
                {
                    "name": "caption",
                    "shape": [1],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(cap)},
                },
            ],
        }
    ).encode()
    return head + img + cap, len(head)


def test_binary_v2_request_with_or_without_the_header_length_metadata() -> None:
    body, n = _v2_binary(IMG, 'a "quoted" {caption}')
    assert json_head_end(body) == n
    for metadata in ({HEADER_LENGTH_METADATA.lower(): [str(n)]}, {}):
        (raw,) = parse_request(body, metadata).parsed.instances
        assert raw.image_bytes == IMG and raw.caption == 'a "quoted" {caption}'
    with pytest.raises(EventError, match="not a V1/V2 inference request"):
        parse_request(body, {HEADER_LENGTH_METADATA.lower(): ["7"]})


def test_storage_down_buffers_then_drops_then_recovers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the log folder should be")
    state = _state(blocker / "logs", retry_s=0.0)
    dropped0 = sink_mod.DROPPED.labels("storage")._value.get()
    for k in range(5):
        state.accept(_ce(f"r{k}", REQUEST_TYPE), _v1_request())
        state.accept(_ce(f"r{k}", RESPONSE_TYPE), _v1_response(_payload(f"r{k}")))
        with pytest.raises(StorageError):
            state.flush()
    assert len(state.rows) == 3 and state.storage_up is False
    assert sink_mod.DROPPED.labels("storage")._value.get() == dropped0 + 2
    assert "storage is down" in caplog.text and "buffer full" in caplog.text
    blocker.unlink()
    assert state.flush() == 3 and state.storage_up is True and not state.rows
    assert sorted(_window(blocker / "logs").column("request_id").to_pylist()) == [
        "r0",
        "r1",
        "r2",
    ]
    assert "storage is back" in caplog.text


# -- emitter --------------------------------------------------------------------------------


class _Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        _Recorder.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        del args


@pytest.fixture
def recorder() -> Iterator[str]:
    _Recorder.received = []
    server = BackgroundHTTPServer(_Recorder)
    yield f"{server.url}/"
    server.close()


def _pair(event_id: str) -> LoggedPair:
    now = datetime.now(UTC)
    return LoggedPair(
        event_id=event_id,
        content_type="application/json",
        request=_v1_request(),
        response=_v1_response(_payload(event_id)),
        metadata={HEADER_LENGTH_METADATA: ["42"]},
        request_time=now,
        response_time=now,
    )


def test_emitter_posts_kserve_logger_events_in_binary_mode(recorder: str) -> None:
    em = EventEmitter(recorder, source="http://pod/", inference_service="pf", namespace="ns")
    pair = _pair("e1")
    assert em.offer(pair)
    em.close()
    (req_h, req_b), (resp_h, resp_b) = _Recorder.received
    assert req_b == pair.request and resp_b == pair.response
    for headers, ce_type in ((req_h, REQUEST_TYPE), (resp_h, RESPONSE_TYPE)):
        assert headers["ce-specversion"] == "1.0" and headers["ce-id"] == "e1"
        assert headers["ce-type"] == ce_type and headers["ce-source"] == "http://pod/"
        assert headers["ce-inferenceservicename"] == "pf" and headers["ce-namespace"] == "ns"
        assert headers["ce-component"] == "predictor" and headers["ce-endpoint"] == "default"
        assert headers["content-type"] == "application/json"  # the request's, for both
        assert json.loads(headers["ce-metadata"]) == {HEADER_LENGTH_METADATA: ["42"]}
        assert headers["ce-time"].endswith("Z") and "ce-recordedtime" in headers
        event = parse_event(headers, req_b)  # what the sink reads back
        assert event.type == ce_type and event.metadata == {
            "inference-header-content-length": ["42"]
        }


def test_emitter_never_blocks_and_counts_its_drops() -> None:
    unreachable = emitter_mod.EMIT_DROPPED.labels("sink_unreachable")
    full = emitter_mod.EMIT_DROPPED.labels("queue_full")
    before_u, before_f = unreachable._value.get(), full._value.get()
    with socket_closed_port() as port:
        em = EventEmitter(
            f"http://127.0.0.1:{port}/", source="s", inference_service="pf", queue_size=2
        )
        t0 = time.perf_counter()
        accepted = [em.offer(_pair(f"d{k}")) for k in range(50)]
        assert time.perf_counter() - t0 < 0.5  # 50 offers, none waits on the sink
        em.close()
    assert accepted.count(False) >= 40
    assert full._value.get() - before_f == accepted.count(False)
    assert unreachable._value.get() - before_u == accepted.count(True)


class socket_closed_port:
    """A loopback port with nothing listening (bound, then closed)."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        return None


def test_http_answers_4xx_for_client_mistakes(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    state = _state(tmp_path / "logs")
    with TestClient(sink_mod.build_app(state)) as client:
        r = client.post("/", content=b"{}", headers={"content-type": "application/json"})
        assert r.status_code == 400 and "not a CloudEvent" in r.json()["error"]
        big = b"x" * (sink_mod.MAX_EVENT_BYTES + 1)
        r = client.post("/", content=big, headers=_ce("big", REQUEST_TYPE))
        assert r.status_code == 413 and "the limit is" in r.json()["error"]
        r = client.post("/", content=_v1_request(), headers=_ce("ok", REQUEST_TYPE))
        assert r.status_code == 200 and r.json() == {"outcome": "held"}
        health = client.get("/healthz").json()
        assert health["pending_events"] == 1 and health["storage_up"] is True
        assert "pairflow_monitor_sink_rejected_total" in client.get("/metrics").text


def test_without_store_images_rows_keep_the_digest_only(tmp_path: Path) -> None:
    monitor = MonitorConfig(log_prefix=str(tmp_path / "logs"), store_images=False)
    state = SinkState(monitor, None)
    state.accept(_ce("s", REQUEST_TYPE), _v1_request())
    state.accept(_ce("s", RESPONSE_TYPE), _v1_response(_payload("s")))
    assert state.flush() == 1
    (row,) = _window(tmp_path / "logs").to_pylist()
    assert row["image_uri"] == "" and row["image_sha256"] == hashlib.sha256(IMG).hexdigest()
    assert not (tmp_path / "logs" / "images").exists()
