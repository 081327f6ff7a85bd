"""The request guard (body cap while reading, deadlines, admission queue) and the strict V2
REST parser, driven as ASGI / plain functions."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import pytest

from pairflow.serve.guard import Message, RequestGuard
from pairflow.serve.limits import RequestError, image_payload, looks_base64
from pairflow.serve.settings import ServeConfig
from pairflow.serve.v2_rest import input_values, parse_infer_body, split_bytes_tensor

CFG = ServeConfig(
    max_body_bytes=2048, max_concurrency=1, max_queue=1, body_timeout_s=0.3, queue_timeout_s=0.3
)


class Inner:
    """The wrapped app: records the bodies it got; ``hold`` makes it wait."""

    def __init__(self, hold: asyncio.Event | None = None) -> None:
        self.bodies: list[bytes] = []
        self.hold = hold

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        message = await receive()
        self.bodies.append(message["body"])
        if self.hold is not None:
            await self.hold.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _no_v2(
    name: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict[str, str], bytes]:
    raise AssertionError("not a V2 request")


def _guard(inner: Inner) -> RequestGuard:
    return RequestGuard(inner, CFG, _no_v2, lambda: {})


async def _call(
    guard: RequestGuard,
    chunks: list[bytes],
    *,
    length: int | None = None,
    delay: float = 0.0,
    path: str = "/v1/models/pairflow:predict",
) -> tuple[int, dict[str, Any], int]:
    """Send ``chunks`` as the body; return (status, JSON body, chunks the guard pulled)."""
    headers = [] if length is None else [(b"content-length", str(length).encode())]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    pulled = 0
    sent: list[Message] = []

    async def receive() -> Message:
        nonlocal pulled
        if pulled >= len(chunks):
            await asyncio.sleep(10)
            return {"type": "http.disconnect"}
        await asyncio.sleep(delay)
        pulled += 1
        return {
            "type": "http.request",
            "body": chunks[pulled - 1],
            "more_body": pulled < len(chunks),
        }

    async def send(message: Message) -> None:
        sent.append(message)

    await guard(scope, receive, send)
    status = sent[0]["status"]
    body = sent[1]["body"]
    return status, (json.loads(body) if body != b"ok" else {}), pulled


def test_declared_length_over_the_cap_is_refused_unread() -> None:
    inner = Inner()
    status, body, pulled = asyncio.run(_call(_guard(inner), [b"x" * 4096], length=4096))
    assert status == 413 and "4096 bytes, the limit is 2048" in body["error"]
    assert pulled == 0 and inner.bodies == []


def test_chunked_body_is_cut_off_as_soon_as_it_passes_the_cap() -> None:
    inner = Inner()
    chunks = [b"x" * 1000] * 10
    status, body, pulled = asyncio.run(_call(_guard(inner), chunks))
    assert status == 413 and "serve.max_body_bytes" in body["error"]
    assert pulled == 3 and inner.bodies == []  # 3000 > 2048: the other 7 chunks never read


def test_body_under_the_cap_reaches_the_app_whole() -> None:
    inner = Inner()
    status, _, _ = asyncio.run(_call(_guard(inner), [b"ab", b"cd"]))
    assert status == 200 and inner.bodies == [b"abcd"]


def test_trickled_body_times_out() -> None:
    inner = Inner()
    status, body, pulled = asyncio.run(_call(_guard(inner), [b"x"] * 20, delay=0.1))
    assert status == 408 and "not received within 0.3 s" in body["error"]
    assert pulled < 20 and inner.bodies == []


def test_overload_is_503_at_once_and_queue_times_out() -> None:
    async def scenario() -> list[tuple[int, float]]:
        hold = asyncio.Event()
        guard = _guard(Inner(hold))
        loop = asyncio.get_running_loop()

        async def timed() -> tuple[int, float]:
            t0 = loop.time()
            status, _, _ = await _call(guard, [b"{}"])
            return status, loop.time() - t0

        running = asyncio.ensure_future(timed())  # takes the one slot
        await asyncio.sleep(0.05)
        queued = asyncio.ensure_future(timed())  # waits in the one queue place
        await asyncio.sleep(0.05)
        refused = await timed()  # nothing left: refused at once
        queued_result = await queued  # the slot never frees in time: 503 after the timeout
        hold.set()
        return [await running, queued_result, refused]

    (ran, _), (queued, queued_s), (refused, refused_s) = asyncio.run(scenario())
    assert ran == 200 and queued == 503 and refused == 503
    assert refused_s < 0.05 and queued_s >= 0.3


def _bytes_tensor(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(x)) + x for x in items)


def test_binary_extension_keeps_raw_bytes_and_json_keeps_text() -> None:
    png = b"\x89PNG\r\n\x1a\n rest of a file"
    img = _bytes_tensor([png, b"QUJD"])
    head = json.dumps(
        {
            "id": "r1",
            "parameters": {"task": "embed"},
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [2],
                    "parameters": {"binary_data_size": len(img)},
                },
                {"name": "caption", "datatype": "BYTES", "shape": [2], "data": ["a", "b"]},
            ],
            "outputs": [{"name": "image_embedding", "parameters": {"binary_data": True}}],
        }
    ).encode()
    req = parse_infer_body(head + img, str(len(head)), "pf")
    assert req.id == "r1" and req.parameters == {"task": "embed"}
    assert input_values(req.inputs[0]) == [png, b"QUJD"]
    assert input_values(req.inputs[1]) == ["a", "b"]
    assert req.request_outputs is not None and req.request_outputs[0].binary_data is True
    # plain JSON without the header (KServe 0.21 refuses it): parsed the same way
    plain = json.dumps(
        {"inputs": [{"name": "caption", "datatype": "BYTES", "shape": [1, 1], "data": [["x"]]}]}
    ).encode()
    assert input_values(parse_infer_body(plain, None, "pf").inputs[0]) == ["x"]


@pytest.mark.parametrize(
    ("body", "header", "message"),
    [
        (b"[1]", None, "expected a JSON object"),
        (b"{", None, "not valid JSON"),
        (b"{}", None, "inputs: missing or not a list"),
        (
            b'{"inputs": [{"name": "x", "datatype": "STRING", "shape": [1], "data": ["a"]}]}',
            None,
            "inputs.x.datatype: 'STRING' is not a V2 datatype",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [-1], "data": ["a"]}]}',
            None,
            "inputs.x.shape: expected a list of non-negative integers",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [2], "data": ["a"]}]}',
            None,
            "inputs.x: shape [2] needs 2 values, got 1",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": ["a"]}]}',
            None,
            "inputs.x.data: expected FP32 numbers, got str",
        ),
        (
            b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1]}]}',
            None,
            "inputs.x: missing data",
        ),
        (b'{"inputs": []}', "99", "inference-header-content-length: 99 is outside"),
        (b'{"inputs": []}', "x", "inference-header-content-length: 'x' is not an integer"),
        (b'{"inputs": []}xyz', "14", "3 binary bytes after the JSON are not claimed"),
        (
            b'{"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], '
            b'"parameters": {"binary_data_size": 8}}]}\x09\x00\x00\x00abcd',
            "json",
            "BYTES element of 9 bytes runs past the end",
        ),
    ],
)
def test_malformed_v2_bodies_name_the_field(body: bytes, header: str | None, message: str) -> None:
    if header == "json":  # the JSON head is the body up to its binary tail
        header = str(body.index(b"}]}") + 3)
    with pytest.raises(RequestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_infer_body(body, header, "pf")


def test_image_forms_are_told_apart() -> None:
    png = b"\x89PNG\r\n\x1a\nIHDR"
    assert not looks_base64(png) and looks_base64(b"iVBORw0KGgo=")
    assert image_payload(png, "image") == png  # raw bytes stay raw
    assert image_payload(b"iVBORw0KGgo=", "image") == b"\x89PNG\r\n\x1a\n"  # base64 as bytes
    assert image_payload("data:image/png;base64,iVBORw0KGgo=", "image") == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(RequestError, match="image: not valid base64"):
        image_payload("***", "image")
    with pytest.raises(RequestError, match="truncated BYTES element length"):
        split_bytes_tensor(b"\x01\x00", "inputs.image")
