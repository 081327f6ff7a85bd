"""The request guard: an ASGI layer in front of KServe's FastAPI app.

What it adds, per HTTP request, before KServe sees a byte of the body:

- **Body cap** (``serve.max_body_bytes``): a ``Content-Length`` over the cap is answered 413
  at once, unread; a chunked body is counted while it arrives and cut off with 413 as soon as
  it passes the cap. Only then is anything parsed.
- **Body deadline** (``serve.body_timeout_s``): a body trickled slower than that is answered
  408 and the connection closed. (Headers have their own deadline in the HTTP protocol, see
  :func:`pairflow.serve.server.timed_http_protocol`.)
- **Admission and queue** for inference routes (V1 ``:predict``, V2 ``/infer``): at most
  ``serve.max_concurrency`` run; up to ``serve.max_queue`` more wait (at most
  ``serve.queue_timeout_s``); anything beyond is answered 503 with ``Retry-After`` at once.
  Bodies are read only after admission, so the bodies held at any time are bounded by
  ``(max_concurrency + max_queue) x max_body_bytes``.
- **V2 model metadata** (``GET /v2/models/NAME``) is answered from the predictor, with the
  ``task`` parameter and each task's inputs and outputs under ``parameters`` (KServe's
  response model keeps only name, datatype and shape of each tensor).
- **V2 REST inference** is parsed here (:mod:`pairflow.serve.v2_rest`: plain JSON and the
  binary tensor extension, raw BYTES elements kept as bytes) and handed to KServe's data plane
  (``DataPlane.infer``, the same call KServe's own route makes); client mistakes are 4xx.

Error bodies follow KServe's shape: ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from pairflow.serve.limits import RequestError
from pairflow.serve.metrics import rejected
from pairflow.serve.settings import ServeConfig

log = logging.getLogger("pairflow.serve.guard")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
# (model name, body, lower-cased headers) -> (status, extra headers, body)
V2Infer = Callable[[str, bytes, dict[str, str]], Awaitable[tuple[int, dict[str, str], bytes]]]

V2_INFER = re.compile(r"^/v2/models/(?P<name>[^/]+)/infer$")
INFERENCE = re.compile(r"^/v1/models/[^/]+:predict$|^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class Refused(Exception):
    """Answer the request with ``status`` and ``message`` (and close when ``close``)."""

    def __init__(self, status: int, reason: str, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.close = close


async def send_error(
    send: Send, status: int, message: str, *, close: bool = False, retry_after: int = 0
) -> None:
    body = orjson.dumps({"error": message})
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if close:
        headers.append((b"connection", b"close"))
    if retry_after:
        headers.append((b"retry-after", b"%d" % retry_after))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@dataclass
class RequestGuard:
    """Wraps ``app`` (KServe's FastAPI app); ``infer_v2`` answers V2 REST inference."""

    app: ASGIApp
    cfg: ServeConfig
    infer_v2: V2Infer
    metadata: Callable[[], dict[str, Any]]
    pending: int = 0
    _slots: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET" and scope["path"] == f"/v2/models/{self.cfg.model_name}":
            await self._send_metadata(send)
            return
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        path = str(scope["path"])
        inference = INFERENCE.match(path) is not None
        cfg = self.cfg
        if inference and self.pending >= cfg.max_concurrency + cfg.max_queue:
            rejected(cfg.model_name, "overloaded")
            await send_error(
                send, 503, "server overloaded: too many requests in flight", retry_after=1
            )
            return
        if inference:
            self.pending += 1
        try:
            try:
                body = await self._read_body(scope, receive)
                if inference:
                    await self._run_admitted(scope, body, receive, send)
                else:
                    await self.app(scope, _replay(body, receive), send)
            except Refused as exc:
                rejected(cfg.model_name, exc.reason)
                if exc.status:  # 0: the client is gone, nobody to answer
                    await send_error(send, exc.status, exc.message, close=exc.close)
        finally:
            if inference:
                self.pending -= 1

    async def _send_metadata(self, send: Send) -> None:
        """V2 model metadata with the ``parameters`` KServe's response model would drop."""
        body = orjson.dumps(self.metadata())
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _run_admitted(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.cfg.max_concurrency)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.cfg.queue_timeout_s)
        except TimeoutError:
            raise Refused(
                503, "queue_timeout", f"server overloaded: queued {self.cfg.queue_timeout_s} s"
            ) from None
        try:
            match = V2_INFER.match(str(scope["path"]))
            if match is None:
                await self.app(scope, _replay(body, receive), send)
                return
            status, headers, payload = await self.infer_v2(match["name"], body, _headers(scope))
            raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            raw.append((b"content-length", b"%d" % len(payload)))
            await send({"type": "http.response.start", "status": status, "headers": raw})
            await send({"type": "http.response.body", "body": payload})
        finally:
            self._slots.release()

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        cap = self.cfg.max_body_bytes
        declared = _headers(scope).get("content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                raise Refused(400, "bad_request", "content-length: not an integer") from None
            if size > cap:
                raise Refused(
                    413,
                    "body_too_large",
                    f"request body: {size} bytes, the limit is {cap} (serve.max_body_bytes)",
                    close=True,
                )
        chunks: list[bytes] = []
        total = 0
        try:
            async with asyncio.timeout(self.cfg.body_timeout_s):
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise Refused(0, "disconnected", "client disconnected")
                    chunk = message.get("body", b"")
                    total += len(chunk)
                    if total > cap:
                        raise Refused(
                            413,
                            "body_too_large",
                            f"request body: more than {cap} bytes (serve.max_body_bytes)",
                            close=True,
                        )
                    if chunk:
                        chunks.append(chunk)
                    if not message.get("more_body", False):
                        break
        except TimeoutError:
            raise Refused(
                408,
                "body_timeout",
                f"request body: not received within {self.cfg.body_timeout_s} s "
                f"({total} bytes arrived)",
                close=True,
            ) from None
        return b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields the already-read body once, then defers to the server's."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def error_status(exc: BaseException) -> int:
    """HTTP status of an exception raised while answering a V2 inference request."""
    # lazy: kserve (slow to import); only this path needs it
    from kserve.errors import InvalidInput, ModelNotFound, ModelNotReady

    if isinstance(exc, RequestError | InvalidInput):
        return 400
    if isinstance(exc, ModelNotFound):
        return 404
    if isinstance(exc, ModelNotReady):
        return 503
    return 500


def error_message(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)
    return str(reason) if reason else str(exc)
