"""Run the predictor in a real KServe ``ModelServer`` process, bound to one host.

Process contract (what ``pairflow serve`` and the deploy backends rely on):

- the HTTP port is bound at once; the model loads and warms up in a background thread;
  ``GET /v2/models/NAME/ready`` (and ``/v1/models/NAME``) answer 503 until it is ready,
  then 200. ``GET /v2/health/live`` is 200 as soon as the port is bound.
- ``GET /metrics``: Prometheus text (see :mod:`pairflow.serve.metrics`).
- SIGTERM or SIGINT: uvicorn stops accepting, finishes in-flight requests (up to
  ``grace_period`` seconds), the model's thread pools are released and the process exits 0.
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
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pairflow.errors import PairflowError

if TYPE_CHECKING:
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
    grace_period: int = 10,
) -> None:
    """Bind ``host:port``, load the model in the background, serve until SIGTERM/SIGINT."""
    with plain_argv():
        from kserve import ModelServer
        from kserve.protocol.rest.server import RESTServer

    class _BoundServer(ModelServer):  # type: ignore[misc]
        """ModelServer on ``host`` (KServe binds 0.0.0.0) serving a not-yet-ready model."""

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
            self._rest_server.config.host = host
            self.servers.append(self._rest_server.start())
            loader.start()  # after the REST server exists, so a failed load can stop it
            if self.enable_grpc:
                from kserve.protocol.grpc.server import GRPCServer

                self._grpc_server = GRPCServer(
                    self.grpc_port,
                    self.dataplane,
                    self.model_repository_extension,
                    kwargs={},
                    grace_period=self.grace_period,
                )
                self.servers.append(self._grpc_server.start(self.max_threads))
            self.setup_event_loop()
            with asyncio.Runner(loop_factory=_loop_factory()) as runner:
                runner.run(self._serve())

    server = _BoundServer(
        http_port=port,
        grpc_port=grpc_port or 0,
        workers=1,
        enable_grpc=grpc_port is not None,
        grace_period=grace_period,
        enable_latency_logging=False,
    )
    if not predictor.cfg.request_logs:
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
    if failure:
        exc = failure[0]
        if isinstance(exc, PairflowError):
            raise exc
        raise ServeError(f"{predictor.uri}: model failed to load ({exc})") from exc


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop when installed (faster HTTP handling), else asyncio's default."""
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def quiet_request_logs() -> None:
    """Drop the per-request INFO lines of uvicorn's access log and KServe's timing trace."""
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
) -> None:
    """Build the predictor for ``model_uri`` and serve it (blocks until shutdown)."""
    with plain_argv():
        from pairflow.serve.predictor import PairflowPredictor

    predictor = PairflowPredictor(
        cfg, model_uri, variant=variant, version_label=version_label, tracking_uri=tracking_uri
    )
    serve_forever(predictor, port=port, host=host, grpc_port=grpc_port)
