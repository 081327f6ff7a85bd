"""Run the predictor in a real KServe ``ModelServer`` process, bound to one host.

Process contract (what ``pairflow serve`` and the deploy backends rely on):

- the HTTP port is bound at once; the model loads and warms up in a background thread;
  ``GET /v2/models/NAME/ready`` (and ``/v1/models/NAME``) answer 503 until it is ready,
  then 200. ``GET /v2/health/ready`` (and gRPC ``ServerReady``) is true only once *every*
  registered model is loaded and warmed (KServe's own answer is always true:
  ``DataPlane.ready``). ``GET /v2/health/live`` is 200 as soon as the port is bound.
- ``GET /metrics``: Prometheus text (see :mod:`pairflow.serve.metrics`).
- hostile traffic: every POST goes through :class:`pairflow.serve.guard.RequestGuard` (body
  cap, body deadline, admission and queue, strict V2 parsing); request headers must arrive
  within ``serve.header_timeout_s`` (:func:`timed_http_protocol`); uvicorn answers 503 past
  ``serve.max_connections``. gRPC gets the same body cap (``max_receive_message_length``)
  and ``maximum_concurrent_rpcs`` (RESOURCE_EXHAUSTED beyond).
- SIGTERM or SIGINT: uvicorn and the gRPC server stop accepting (new connections are
  refused), finish in-flight requests (up to ``serve.grace_period_s``), answer a request
  that a connection accepted just before sends just after (see :func:`timed_http_protocol`),
  the model's thread pools are released and the process exits 0.
- a model that fails to load stops the server; the process exits 2 with one error line.

Speed: the event loop is uvloop's when installed, and the per-request log lines (uvicorn's
access log, KServe's timing trace) are off unless ``serve.request_logs`` is set; measured,
they took ~10% of the event loop's time per request.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import orjson

from pairflow.errors import PairflowError
from pairflow.serve.guard import error_message, error_status
from pairflow.serve.metrics import rejected

if TYPE_CHECKING:
    from pairflow.config import MonitorConfig
    from pairflow.serve.guard import V2Infer
    from pairflow.serve.predictor import PairflowPredictor
    from pairflow.serve.settings import ServeConfig

log = logging.getLogger("pairflow.serve.server")


class ServeError(PairflowError):
    """The model server could not start or its model could not load."""


@contextmanager
def plain_argv() -> Iterator[None]:
    """Hide our argv while kserve is imported: it parses ``sys.argv`` at import time."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved


def serve_forever(
    predictor: PairflowPredictor,
    *,
    port: int,
    host: str = "127.0.0.1",
    grpc_port: int | None = None,
    grace_period: int | None = None,
) -> None:
    """Bind ``host:port``, load the model in the background, serve until SIGTERM/SIGINT."""
    # lazy: kserve (slow to import); read only after plain_argv() hides our arguments from it
    with plain_argv():
        from kserve import ModelServer
        from kserve.model_server import app as kserve_app
        from kserve.protocol.rest.server import RESTServer

        from pairflow.serve.guard import RequestGuard
        from pairflow.serve.requestlog.emitter import EmitterMiddleware, EventEmitter

    cfg = predictor.cfg
    emitter = None
    if predictor.monitor.sink_url:
        emitter = EventEmitter(
            predictor.monitor.sink_url,
            source=f"http://{host}:{port}/",
            inference_service=cfg.model_name,
        )
        log.info("request log: sampled requests go to %s", predictor.monitor.sink_url)
    grace = grace_period or cfg.grace_period_s

    class _BoundServer(ModelServer):  # type: ignore[misc]
        """ModelServer on ``host`` (KServe binds 0.0.0.0) serving a not-yet-ready model,
        behind the request guard; REST and gRPC stop together on SIGTERM."""

        def start(self, models: list[Any]) -> None:
            for model in models:
                self.register_model(model)
            self._rest_server = RESTServer(
                "kserve.model_server:app",
                self.dataplane,
                self.model_repository_extension,
                self.http_port,
                workers=1,
                grace_period=self.grace_period,
                timeout_keep_alive=self.timeout_keep_alive,
            )
            config = self._rest_server.config
            config.host = host
            config.app = RequestGuard(
                kserve_app, cfg, v2_infer_handler(self.dataplane), predictor.metadata
            )
            if emitter is not None:
                config.app = EmitterMiddleware(config.app, emitter)
            config.http = timed_http_protocol(cfg.header_timeout_s)
            config.limit_concurrency = cfg.max_connections
            self.servers.append(self._rest_server.start())
            loader.start()  # after the REST server exists, so a failed load can stop it
            if self.enable_grpc:
                self._grpc_server = guarded_grpc_server(
                    host, self.grpc_port, self.dataplane, self.model_repository_extension, cfg
                )
                self.servers.append(self._grpc_server.start(self.max_threads))
            self.setup_event_loop()
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(self._serve())

        async def _serve(self) -> None:
            tasks = [asyncio.ensure_future(s) for s in self.servers]
            rest = self._rest_server._server
            grpc_server = self._grpc_server
            if grpc_server is not None:
                # uvicorn owns SIGTERM/SIGINT while it serves: stop gRPC when it starts to exit
                while not rest.should_exit and not tasks[0].done():
                    await asyncio.sleep(0.05)
                await grpc_server.stop()
            await asyncio.gather(*tasks)

    server = _BoundServer(
        http_port=port,
        grpc_port=grpc_port or 0,
        workers=1,
        enable_grpc=grpc_port is not None,
        grace_period=grace,
        enable_latency_logging=False,
    )
    server.dataplane = all_ready_dataplane(server.registered_models)
    if not cfg.request_logs:
        quiet_request_logs()
    failure: list[BaseException] = []

    def load() -> None:
        try:
            predictor.load()
        except Exception as exc:  # noqa: BLE001 - re-raised after the server has stopped
            log.error("model %s failed to load: %s", predictor.uri, exc)
            failure.append(exc)
            rest = server._rest_server
            if rest is not None:
                rest._server.should_exit = True

    loader = threading.Thread(target=load, name="pairflow-load", daemon=True)
    # uvicorn captures SIGTERM/SIGINT while serving and re-raises them after its graceful
    # shutdown; these handlers receive that re-raise, so the process then exits 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _log_signal)
    try:
        server.start([predictor])
    finally:
        predictor.stop()
        if emitter is not None:
            emitter.close()
    if failure:
        exc = failure[0]
        if isinstance(exc, PairflowError):
            raise exc
        raise ServeError(f"{predictor.uri}: model failed to load ({exc})") from exc


def all_ready_dataplane(registry: Any) -> Any:
    """KServe's DataPlane whose server readiness is "every registered model is ready"."""
    # lazy: kserve (slow to import); only this path needs it
    from kserve.protocol.dataplane import DataPlane

    class AllModelsReady(DataPlane):  # type: ignore[misc]
        async def ready(self) -> bool:
            models = self.model_registry.get_models()
            for name in models:
                if not await self.model_registry.is_model_ready(name):
                    return False
            return bool(models) and bool(await super().ready())

    return AllModelsReady(model_registry=registry)


def v2_infer_handler(dataplane: Any) -> V2Infer:
    """V2 REST inference through KServe's data plane, parsed by :mod:`pairflow.serve.v2_rest`."""
    # lazy: kserve (slow to import); only this path needs it
    from kserve.errors import ModelNotReady

    from pairflow.serve.v2_rest import HEADER, parse_infer_body

    async def infer(
        name: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        try:
            request = parse_infer_body(body, headers.get(HEADER), name)
            if not await dataplane.model_ready(name, True):
                raise ModelNotReady(name)
            response, _ = await dataplane.infer(model_name=name, request=request, headers=headers)
            encoded, json_size = response.to_rest()
        except Exception as exc:  # every failure becomes an HTTP answer
            status = error_status(exc)
            if status >= 500:
                log.exception("V2 inference on %s failed", name)
            payload = orjson.dumps({"error": error_message(exc)})
            return status, {"content-type": "application/json"}, payload
        if isinstance(encoded, bytes):
            hdrs = {"content-type": "application/octet-stream", HEADER: str(json_size)}
            return 200, hdrs, encoded
        data = orjson.dumps(encoded, option=orjson.OPT_SERIALIZE_NUMPY)
        return 200, {"content-type": "application/json"}, data

    return infer


def timed_http_protocol(header_timeout_s: float) -> type:
    """uvicorn's httptools protocol with a deadline on request headers (uvicorn 0.55 has
    none: a client trickling headers holds its connection forever). The clock starts when
    the connection opens or a new request begins and stops when its headers are complete;
    on expiry the client gets 408 and the connection is closed.

    Graceful shutdown, as Go's ``http.Server.Shutdown`` does it: uvicorn closes every
    connection without a response cycle at once, which cuts a request whose bytes are in
    flight on a connection accepted a moment before SIGTERM (the client sees the connection
    closed with no answer). Here a connection in the middle of a request's headers, or one
    that has not sent its first request yet, gets :data:`NEW_CONNECTION_GRACE_S` (at most the
    header deadline) to send it; that request is answered with ``connection: close``. A
    kept-alive connection idle between requests is closed at once, as before."""
    # lazy: uvicorn (slow to import); only this path needs it
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    grace_s = min(NEW_CONNECTION_GRACE_S, header_timeout_s)

    class HeaderTimedProtocol(HttpToolsProtocol):
        _header_timer: asyncio.TimerHandle | None = None
        _spoke = False  # a request has begun on this connection
        _in_headers = False
        _draining = False

        def shutdown(self) -> None:
            if self.cycle is None and (not self._spoke or self._in_headers):
                self._draining = True
                self.loop.call_later(grace_s, self._close_if_idle)
                return
            super().shutdown()

        def _close_if_idle(self) -> None:
            if (self.cycle is None or self.cycle.response_complete) and not self._in_headers:
                self.transport.close()

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(header_timeout_s, self._expire)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._spoke = True
            self._in_headers = True
            self._arm()

        def on_headers_complete(self) -> None:
            self._disarm()
            self._in_headers = False
            super().on_headers_complete()
            if self._draining and self.cycle is not None:
                self.cycle.keep_alive = False

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _expire(self) -> None:
            self._header_timer = None
            if self.transport.is_closing():
                return
            rejected(cfg_name[0], "header_timeout")
            msg = f"request headers not received within {header_timeout_s} s"
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(msg), msg.encode())
            )
            self.transport.close()

    return HeaderTimedProtocol


NEW_CONNECTION_GRACE_S = 2.0  # on shutdown: time a just-accepted connection gets to send
cfg_name = ["pairflow"]  # model name for the header-timeout metric (set by run())


def guarded_grpc_server(
    host: str, port: int, dataplane: Any, repository: Any, cfg: ServeConfig
) -> Any:
    """KServe's gRPC V2 server bound to ``host``, with the body cap as its largest message
    and ``max_concurrency + max_queue`` concurrent RPCs (RESOURCE_EXHAUSTED beyond)."""

    # lazy: grpc, kserve (slow to import); only this path needs it
    from grpc import aio  # type: ignore[import-untyped]
    from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
    from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor
    from kserve.protocol.grpc.server import GRPCServer
    from kserve.protocol.grpc.servicer import InferenceServicer

    class Guarded(GRPCServer):  # type: ignore[misc]
        async def start(self, max_workers: int) -> None:
            self._server = aio.server(
                futures.ThreadPoolExecutor(max_workers=max_workers),
                interceptors=(ExceptionToStatusInterceptor(),),
                options=[
                    ("grpc.max_receive_message_length", cfg.max_body_bytes),
                    ("grpc.max_send_message_length", 64 * 1024 * 1024),
                ],
                maximum_concurrent_rpcs=cfg.max_concurrency + cfg.max_queue,
            )
            grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
                InferenceServicer(self._data_plane, self._model_repository_extension),
                self._server,
            )
            self._server.add_insecure_port(f"{host}:{self._port}")
            await self._server.start()
            await self._server.wait_for_termination()

    return Guarded(port, dataplane, repository, kwargs={}, grace_period=cfg.grace_period_s)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (faster HTTP handling), else asyncio's default."""
    # lazy: uvloop is optional; its absence is handled here
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def quiet_request_logs() -> None:
    """Drop the per-request INFO lines of uvicorn's access log and KServe's timing trace."""
    # lazy: kserve (slow to import); only this path needs it
    from kserve.logging import trace_logger

    for logger in (logging.getLogger("uvicorn.access"), trace_logger):
        logger.setLevel(logging.WARNING)


def _log_signal(signum: int, frame: object) -> None:
    del frame
    log.info("%s: server stopped", signal.Signals(signum).name)


def run(
    cfg: ServeConfig,
    model_uri: str,
    *,
    port: int,
    host: str = "127.0.0.1",
    variant: str = "auto",
    version_label: str | None = None,
    tracking_uri: str | None = None,
    grpc_port: int | None = None,
    monitor: MonitorConfig | None = None,
) -> None:
    """Build the predictor for ``model_uri`` and serve it (blocks until shutdown).

    ``monitor``: request logging (sampled responses are marked when ``serve.mark_for_logger``
    or ``monitor.sink_url`` is set; with ``sink_url`` this process also posts their
    CloudEvents to the sink, see :mod:`pairflow.serve.requestlog.emitter`)."""
    # lazy: the predictor loads kserve and torch; read only after plain_argv()
    with plain_argv():
        from pairflow.serve.predictor import PairflowPredictor

    predictor = PairflowPredictor(
        cfg,
        model_uri,
        variant=variant,
        version_label=version_label,
        tracking_uri=tracking_uri,
        monitor=monitor,
    )
    cfg_name[0] = cfg.model_name
    serve_forever(predictor, port=port, host=host, grpc_port=grpc_port)
