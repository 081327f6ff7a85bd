"""Local stand-in for KServe's payload logger: ``pairflow serve`` posts CloudEvents to the sink.

On a cluster the KServe agent logs every request and every 200 response
(:mod:`pairflow.serve.requestlog.cloudevents` has the details). Locally, with ``monitor.sink_url``
set,
:class:`EmitterMiddleware` (an ASGI layer in front of the predictor) does the same for the
*sampled* requests only (the responses that carry the monitor payload): the sink would drop
the others anyway, and copying every request body would cost the predictor.

It never holds a prediction up: an answered request is handed to a bounded queue
(``put_nowait``); a background thread posts the request and response events. A full queue,
an unreachable sink or a non-2xx answer drops the pair and counts it in
``pairflow_monitor_emit_dropped_total{reason}`` (``queue_full``, ``sink_unreachable``,
``sink_status``); ``pairflow_monitor_emitted_total`` counts pairs delivered.
"""

from __future__ import annotations

import logging
import queue
import re
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter

from pairflow.serve.requestlog.cloudevents import (
    HEADER_LENGTH_METADATA,
    REQUEST_TYPE,
    RESPONSE_TYPE,
    Event,
    binary_headers,
    rfc3339,
)
from pairflow.serve.requestlog.mark import PAYLOAD_KEY

log = logging.getLogger("pairflow.serve.requestlog.emitter")

EMIT_DROPPED = Counter(
    "pairflow_monitor_emit_dropped",
    "Sampled request/response pairs the local emitter dropped (the prediction was answered).",
    ["reason"],
)
EMITTED = Counter("pairflow_monitor_emitted", "Request/response event pairs posted to the sink.")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

INFERENCE = re.compile(r"^/v1/models/[^/]+:predict$|^/v2/models/[^/]+(/versions/[^/]+)?/infer$")
_MARK = PAYLOAD_KEY.encode()


@dataclass(frozen=True)
class LoggedPair:
    """One answered request as the logger saw it."""

    event_id: str
    content_type: str
    request: bytes
    response: bytes
    metadata: dict[str, list[str]]
    request_time: datetime
    response_time: datetime


class EventEmitter:
    """Posts logged pairs to ``sink_url`` from a background thread (bounded queue)."""

    def __init__(
        self,
        sink_url: str,
        *,
        source: str,
        inference_service: str,
        namespace: str = "local",
        component: str = "predictor",
        endpoint: str = "default",
        queue_size: int = 256,
        timeout_s: float = 2.0,
    ) -> None:
        self.sink_url = sink_url
        self.source = source
        self.inference_service = inference_service
        self.namespace = namespace
        self.component = component
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        self._queue: queue.Queue[LoggedPair | None] = queue.Queue(queue_size)
        self._thread = threading.Thread(target=self._run, name="pairflow-emit", daemon=True)
        self._thread.start()
        self._last_warning = 0.0

    def offer(self, pair: LoggedPair) -> bool:
        """Queue ``pair`` without waiting; False (and counted) when the queue is full."""
        try:
            self._queue.put_nowait(pair)
        except queue.Full:
            EMIT_DROPPED.labels("queue_full").inc()
            self._warn("queue full")
            return False
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (up to ``timeout_s``), then stop the thread."""
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while True:
            pair = self._queue.get()
            if pair is None:
                return
            reason = self._send(pair)
            if reason is None:
                EMITTED.inc()
            else:
                EMIT_DROPPED.labels(reason).inc()
                self._warn(reason)

    def _send(self, pair: LoggedPair) -> str | None:
        for ce_type, data, when in (
            (REQUEST_TYPE, pair.request, pair.request_time),
            (RESPONSE_TYPE, pair.response, pair.response_time),
        ):
            event = Event(
                id=pair.event_id,
                type=ce_type,
                source=self.source,
                content_type=pair.content_type,
                data=data,
                time=rfc3339(when),
                metadata=pair.metadata,
                inference_service=self.inference_service,
                namespace=self.namespace,
                component=self.component,
                endpoint=self.endpoint,
            )
            req = urllib.request.Request(
                self.sink_url, data=data, headers=binary_headers(event), method="POST"
            )
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    resp.read()
            except urllib.error.HTTPError as exc:
                log.debug("sink answered %s: %s", exc.code, exc.read()[:200])
                return "sink_status"
            except OSError:
                return "sink_unreachable"
        return None

    def _warn(self, reason: str) -> None:
        now = time.monotonic()
        if now - self._last_warning > 10.0:  # at most one line per 10 s
            self._last_warning = now
            log.warning(
                "request log: dropping sampled requests (%s; sink %s); predictions are unaffected",
                reason,
                self.sink_url,
            )


class EmitterMiddleware:
    """ASGI layer: after a 200 inference answer that carries the monitor payload, hand the
    request and response bodies to the emitter (never awaiting it)."""

    def __init__(self, app: ASGIApp, emitter: EventEmitter) -> None:
        self.app = app
        self.emitter = emitter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "POST"
            or not INFERENCE.match(str(scope["path"]))
        ):
            await self.app(scope, receive, send)
            return
        started = datetime.now(UTC)
        chunks: list[bytes] = []
        out: list[bytes] = []
        status = [0]

        async def tee_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def tee_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            elif message["type"] == "http.response.body" and status[0] == 200:
                out.append(message.get("body", b""))
                if not message.get("more_body", False):
                    self._offer(scope, chunks, out, started)
            await send(message)

        await self.app(scope, tee_receive, tee_send)

    def _offer(
        self, scope: Scope, chunks: list[bytes], out: list[bytes], started: datetime
    ) -> None:
        response = b"".join(out)
        if _MARK not in response:
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        metadata: dict[str, list[str]] = {}
        length = headers.get(HEADER_LENGTH_METADATA.lower())
        if length is not None:
            metadata[HEADER_LENGTH_METADATA] = [length]
        self.emitter.offer(
            LoggedPair(
                event_id=headers.get("ce-id") or str(uuid.uuid4()),
                content_type=headers.get("content-type", ""),
                request=b"".join(chunks),
                response=response,
                metadata=metadata,
                request_time=started,
                response_time=datetime.now(UTC),
            )
        )
