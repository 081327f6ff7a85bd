"""``pairflow monitor-sink``: receives KServe logger CloudEvents, writes batched Parquet.

Routes (Starlette on uvicorn, both already in the serving stack):

- ``POST /`` (any path but the ones below): one CloudEvent, binary or structured mode. A
  request event is parsed and held until its response event (same ``ce-id``) arrives, or the
  other way round; held events expire after ``pair_ttl_s`` (``..._unpaired_total{type}``), and
  at most ``max_pending_bytes`` of bodies are held (beyond: ``..._dropped_total{reason=
  "pending_full"}``). A response without the monitor payload (an unsampled request) is
  counted (``..._unsampled_total``) and dropped with its request. Malformed events: 400 with
  the reason, never 500.
- ``POST /flush``: write what is buffered now (tests, the demo); 503 when storage is down.
- ``GET /healthz``: 200 with buffer and storage state. ``GET /metrics``: Prometheus text.

Writing: rows are buffered and written as Parquet parts
(:mod:`pairflow.serve.requestlog.sink_store`)
at ``monitor.flush_rows`` rows or when the oldest is ``monitor.flush_seconds`` old, by a
background thread; image bytes first, content-addressed (``monitor.store_images``). When
storage fails, rows stay buffered (up to ``monitor.max_buffer_rows`` rows and
``max_buffer_bytes``), later rows are dropped and counted
(``pairflow_monitor_sink_dropped_total{reason="storage"}``), a WARNING says so, and the write
is retried. SIGTERM: uvicorn stops accepting, then everything buffered is written.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from pairflow.config import MonitorConfig, S3Config
from pairflow.serve.requestlog.cloudevents import REQUEST_TYPE, EventError, parse_event
from pairflow.serve.requestlog.records import to_table
from pairflow.serve.requestlog.sink_rows import (
    LoggedRequest,
    Row,
    build_rows,
    parse_request,
    parse_response,
)
from pairflow.serve.requestlog.sink_store import StorageError, image_uri, put, write_parts

log = logging.getLogger("pairflow.serve.requestlog.sink")

# Largest event body accepted (413 beyond): a logged request is at most serve.max_body_bytes
# (8 MiB by default) as the predictor accepted it.
MAX_EVENT_BYTES = 32 * 1024 * 1024

EVENTS = Counter("pairflow_monitor_sink_events", "CloudEvents accepted.", ["type"])
REJECTED = Counter(
    "pairflow_monitor_sink_rejected", "CloudEvents refused with 400 (malformed).", ["reason"]
)
UNSAMPLED = Counter(
    "pairflow_monitor_sink_unsampled", "Responses without the monitor payload (not sampled)."
)
UNPAIRED = Counter(
    "pairflow_monitor_sink_unpaired",
    "Events whose request/response partner did not arrive in time.",
    ["type"],
)
DROPPED = Counter(
    "pairflow_monitor_sink_dropped",
    "Rows (reason storage) or events (pending_full) dropped by the sink.",
    ["reason"],
)
ROWS_WRITTEN = Counter("pairflow_monitor_sink_rows_written", "Rows written to storage.")
PARTS_WRITTEN = Counter("pairflow_monitor_sink_parts_written", "Parquet parts written.")
IMAGES_WRITTEN = Counter("pairflow_monitor_sink_images_written", "Image files written.")
STORAGE_ERRORS = Counter("pairflow_monitor_sink_storage_errors", "Failed writes to storage.")
BUFFERED = Gauge("pairflow_monitor_sink_buffered_rows", "Rows waiting to be written.")
STORAGE_UP = Gauge("pairflow_monitor_sink_storage_up", "1 when the last write succeeded.")


@dataclass
class _Pending:
    born: float
    is_request: bool
    request: LoggedRequest | None = None
    payload: dict[str, Any] | None = None
    size: int = 0


@dataclass
class SinkState:
    """The sink's buffers: pending events by id, rows to write, and the writer's state."""

    monitor: MonitorConfig
    s3: S3Config | None
    pair_ttl_s: float = 60.0
    max_pending_bytes: int = 256 * 1024 * 1024
    max_buffer_bytes: int = 512 * 1024 * 1024
    retry_s: float = 2.0
    pending: OrderedDict[str, _Pending] = field(default_factory=OrderedDict)
    pending_bytes: int = 0
    rows: deque[tuple[float, Row]] = field(default_factory=deque)
    row_bytes: int = 0
    storage_up: bool = True
    next_try: float = 0.0
    last_drop_warning: float = -1e9
    last_down_warning: float = -1e9
    dropped_since_warning: int = 0
    stored_images: OrderedDict[str, None] = field(default_factory=OrderedDict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    write_lock: threading.Lock = field(default_factory=threading.Lock)
    wake: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if not self.monitor.log_prefix:
            raise ValueError("monitor.log_prefix: empty; the sink needs an s3:// prefix or folder")
        STORAGE_UP.set(1)

    # -- events ---------------------------------------------------------------------------

    def accept(self, headers: dict[str, str], body: bytes) -> str:
        """Take one event; returns what happened (EventError for a malformed one)."""
        event = parse_event(headers, body)
        is_request = event.type == REQUEST_TYPE
        if is_request:
            request: LoggedRequest | None = parse_request(event.data, event.metadata)
            payload = None
            size = len(event.data)
        else:
            request = None
            payload = parse_response(event.data)
            size = 512
        EVENTS.labels("request" if is_request else "response").inc()
        if not is_request and payload is None:
            UNSAMPLED.inc()  # its request (held or still to come) is dropped with it
        now = time.monotonic()
        with self.lock:
            self._expire(now)
            held = self.pending.pop(event.id, None)
            if held is None:
                if self.pending_bytes + size > self.max_pending_bytes:
                    DROPPED.labels("pending_full").inc()
                    return "dropped: pending buffer full"
                self.pending[event.id] = _Pending(now, is_request, request, payload, size)
                self.pending_bytes += size
                return "held"
            self.pending_bytes -= held.size
        if held.is_request == is_request:
            raise EventError(f"ce-id {event.id}: a second {event.type} event with this id")
        if is_request:
            payload = held.payload
        else:
            request = held.request
        if payload is None:
            return "unsampled"
        assert request is not None
        namer = partial(image_uri, self.monitor.log_prefix) if self.monitor.store_images else None
        rows = build_rows(request, payload, image_uri=namer)
        return self._buffer(rows)

    def _expire(self, now: float) -> None:
        while self.pending:
            held = next(iter(self.pending.values()))
            if now - held.born < self.pair_ttl_s:
                return
            self.pending.popitem(last=False)
            self.pending_bytes -= held.size
            UNPAIRED.labels("request" if held.is_request else "response").inc()

    def _buffer(self, rows: list[Row]) -> str:
        size = sum(r.size for r in rows)
        now = time.monotonic()
        with self.lock:
            full = (
                len(self.rows) + len(rows) > self.monitor.max_buffer_rows
                or self.row_bytes + size > self.max_buffer_bytes
            )
            if full:
                DROPPED.labels("storage").inc(len(rows))
                self.dropped_since_warning += len(rows)
                if now - self.last_drop_warning < 10.0:  # one line per 10 s at most
                    return "dropped: buffer full"
                self.last_drop_warning = now
                log.warning(
                    "request log: buffer full (%d rows, %d bytes; storage %s): dropped %d "
                    'rows (pairflow_monitor_sink_dropped_total{reason="storage"})',
                    len(self.rows),
                    self.row_bytes,
                    "up" if self.storage_up else "DOWN",
                    self.dropped_since_warning,
                )
                self.dropped_since_warning = 0
                return "dropped: buffer full"
            self.rows.extend((now, r) for r in rows)
            self.row_bytes += size
            BUFFERED.set(len(self.rows))
            if len(self.rows) >= self.monitor.flush_rows:
                self.wake.set()
        return f"buffered {len(rows)} rows"

    # -- writing --------------------------------------------------------------------------

    def due(self, now: float) -> bool:
        with self.lock:
            if not self.rows or now < self.next_try:
                return False
            oldest = self.rows[0][0]
            return (
                len(self.rows) >= self.monitor.flush_rows
                or now - oldest >= self.monitor.flush_seconds
            )

    def flush(self) -> int:
        """Write every buffered row (in parts of ``flush_rows``); returns rows written.

        StorageError when storage fails (the rows stay buffered and are retried)."""
        written = 0
        with self.write_lock:
            while True:
                with self.lock:
                    batch = [r for _, r in list(self.rows)[: self.monitor.flush_rows]]
                if not batch:
                    return written
                try:
                    self._write(batch)
                except StorageError as exc:
                    STORAGE_ERRORS.inc()
                    now = time.monotonic()
                    with self.lock:
                        went_down = self.storage_up
                        self.storage_up = False
                        self.next_try = now + self.retry_s
                        buffered = len(self.rows)
                    STORAGE_UP.set(0)
                    if not went_down and now - self.last_down_warning < 60.0:
                        raise  # said at most once a minute while it stays down
                    self.last_down_warning = now
                    log.warning(
                        "request log: storage is down (%s); %d rows buffered (limit %d), "
                        "retrying in %.1f s; beyond the limit rows are dropped and counted "
                        'in pairflow_monitor_sink_dropped_total{reason="storage"}',
                        exc,
                        buffered,
                        self.monitor.max_buffer_rows,
                        self.retry_s,
                    )
                    raise
                with self.lock:
                    for _ in batch:
                        _, row = self.rows.popleft()
                        self.row_bytes -= row.size
                    BUFFERED.set(len(self.rows))
                    recovered = not self.storage_up
                    self.storage_up = True
                    self.next_try = 0.0
                STORAGE_UP.set(1)
                if recovered:
                    log.warning("request log: storage is back; writing buffered rows")
                written += len(batch)

    def _write(self, batch: list[Row]) -> None:
        for row in batch:
            sha = row.values["image_sha256"]
            if row.image is not None and sha not in self.stored_images:
                put(row.values["image_uri"], row.image, self.s3)
                IMAGES_WRITTEN.inc()
                self.stored_images[sha] = None
                while len(self.stored_images) > 100_000:
                    self.stored_images.popitem(last=False)
        by_dim: dict[int, list[dict[str, Any]]] = {}
        for row in batch:
            by_dim.setdefault(row.dim, []).append(row.values)
        for dim, values in by_dim.items():
            parts = write_parts(self.monitor.log_prefix, to_table(values, dim), self.s3)
            PARTS_WRITTEN.inc(len(parts))
        ROWS_WRITTEN.inc(len(batch))

    def health(self) -> dict[str, Any]:
        with self.lock:
            return {
                "status": "ok",
                "buffered_rows": len(self.rows),
                "pending_events": len(self.pending),
                "storage_up": self.storage_up,
                "log_prefix": self.monitor.log_prefix,
            }


class Writer:
    """Background thread that flushes the state when due."""

    def __init__(self, state: SinkState, tick_s: float = 0.2) -> None:
        self.state = state
        self.tick_s = tick_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sink-writer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.state.wake.wait(self.tick_s)
            self.state.wake.clear()
            if self.state.due(time.monotonic()):
                try:
                    self.state.flush()
                except StorageError:
                    continue  # logged by flush; retried after retry_s

    def stop(self) -> None:
        """Stop the thread, then write what is left (one try; the loss is logged)."""
        self._stop.set()
        self.state.wake.set()
        self._thread.join(30)
        try:
            written = self.state.flush()
        except StorageError:
            log.error(
                "request log: shutting down with storage down: %d rows lost",
                len(self.state.rows),
            )
            DROPPED.labels("storage").inc(len(self.state.rows))
            return
        log.info("request log: wrote %d buffered rows on shutdown", written)


def build_app(state: SinkState) -> Starlette:
    """The sink's HTTP app over ``state``."""

    async def event(request: Request) -> Response:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_EVENT_BYTES:
            REJECTED.labels("too_large").inc()
            return JSONResponse(
                {"error": f"event body: {declared} bytes, the limit is {MAX_EVENT_BYTES}"},
                status_code=413,
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > MAX_EVENT_BYTES:
                REJECTED.labels("too_large").inc()
                return JSONResponse(
                    {"error": f"event body: more than {MAX_EVENT_BYTES} bytes"}, status_code=413
                )
            chunks.append(chunk)
        body = b"".join(chunks)
        try:
            outcome = state.accept(dict(request.headers), body)
        except EventError as exc:
            REJECTED.labels("malformed").inc()
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"outcome": outcome})

    async def flush(request: Request) -> Response:
        del request
        try:
            written = state.flush()
        except StorageError as exc:
            return JSONResponse({"error": f"storage down: {exc}"}, status_code=503)
        return JSONResponse({"written": written})

    async def healthz(request: Request) -> Response:
        del request
        return JSONResponse(state.health())

    async def metrics(request: Request) -> Response:
        del request
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/flush", flush, methods=["POST"]),
            Route("/{path:path}", event, methods=["POST"]),
        ]
    )


def serve_sink(
    monitor: MonitorConfig,
    s3: S3Config | None,
    *,
    host: str = "127.0.0.1",
    port: int = 8090,
    pair_ttl_s: float = 60.0,
    retry_s: float = 2.0,
) -> None:
    """Run the sink until SIGTERM/SIGINT, then write what is buffered."""
    # lazy: uvicorn (slow to import); only this path needs it
    import uvicorn

    state = SinkState(monitor, s3, pair_ttl_s=pair_ttl_s, retry_s=retry_s)
    writer = Writer(state)
    writer.start()
    config = uvicorn.Config(build_app(state), host=host, port=port, log_level="warning")
    server = uvicorn.Server(config)
    # uvicorn captures SIGTERM/SIGINT while serving and re-raises them once it has stopped;
    # these handlers receive that re-raise, so the buffered rows are written and the process
    # exits 0 (the default handler would kill it first).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _log_signal)
    log.info("monitor-sink on http://%s:%d writing to %s", host, port, monitor.log_prefix)
    try:
        server.run()
    finally:
        writer.stop()


def _log_signal(signum: int, frame: object) -> None:
    del frame
    log.info("%s: monitor-sink stopped accepting events", signal.Signals(signum).name)
