"""A weighted HTTP reverse proxy on 127.0.0.1 in front of the stable and candidate predictors.

Each request goes to the candidate with probability ``weight``% (else stable); weights change
atomically between requests, so requests in flight finish where they started and no client
request fails during a switch or a rollback. With ``failover`` on, a request the candidate
fails (5xx or connection error: e.g. the process died) is retried once on stable: the client
gets stable's answer, the failure still counts against the candidate.

Every upstream attempt is recorded (:class:`pairflow.deploy.analysis.Record`): time, backend,
outcome, latency and the pair score found in the response (``score_of``), which is what the
canary analysis compares.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from pairflow.deploy.analysis import Record

log = logging.getLogger("pairflow.deploy.router")

T = TypeVar("T")
STABLE, CANDIDATE = "stable", "candidate"
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}
)


def score_of(body: Any) -> float | None:
    """The mean pair score in a predictor response, if it holds one.

    Understands ``{"scores": [...]}``, ``{"score": x}``, ``{"predictions": [...]}`` of numbers
    or of objects with ``score``, and V2 ``{"outputs": [{"name": "score", "data": [...]}]}``.
    """
    if not isinstance(body, dict):
        return None
    values: list[float] = []
    if isinstance(body.get("score"), int | float):
        values = [float(body["score"])]
    for key in ("scores", "predictions"):
        seq = body.get(key)
        if isinstance(seq, list):
            for item in seq:
                if isinstance(item, int | float) and not isinstance(item, bool):
                    values.append(float(item))
                elif isinstance(item, dict) and isinstance(item.get("score"), int | float):
                    values.append(float(item["score"]))
    for out in body.get("outputs") or []:
        if isinstance(out, dict) and out.get("name") in {"score", "scores", "pair_score"}:
            values.extend(float(v) for v in out.get("data") or [] if isinstance(v, int | float))
    return sum(values) / len(values) if values else None


class LoopThread:
    """An asyncio event loop running in a daemon thread; run coroutines on it from sync code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()


class WeightedRouter:
    """Routes to ``stable_url``/``candidate_url`` by weight; records every upstream attempt."""

    def __init__(
        self,
        stable_url: str,
        candidate_url: str,
        *,
        port: int = 0,
        failover: bool = True,
        timeout_s: float = 30.0,
        seed: int = 0,
        extract_score: Callable[[Any], float | None] = score_of,
    ) -> None:
        self.urls = {STABLE: stable_url.rstrip("/"), CANDIDATE: candidate_url.rstrip("/")}
        self.failover = failover
        self.timeout_s = timeout_s
        self.extract_score = extract_score
        self._port = port
        self._weight = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._records: list[Record] = []
        self._loop = LoopThread()
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> str:
        """Start listening; return the router's base URL."""
        self.port = self._loop.run(self._start(), timeout=30)
        log.info("router on 127.0.0.1:%d (stable %s, candidate %s)", self.port, *self.urls.values())
        return self.url

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _start(self) -> int:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            connector=aiohttp.TCPConnector(limit=64),
        )
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        return int(sockets[0].getsockname()[1])

    def close(self) -> None:
        try:
            self._loop.run(self._close(), timeout=30)
        finally:
            self._loop.stop()

    async def _close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    # -- weights and records -----------------------------------------------------------------

    @property
    def weight(self) -> int:
        return self._weight

    def set_weight(self, percent: int) -> None:
        """Send ``percent``% of new requests to the candidate (0 = all stable)."""
        if not 0 <= percent <= 100:
            raise ValueError(f"router weight must be in [0, 100], got {percent}")
        self._weight = percent
        log.info("router: candidate weight %d%%", percent)

    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def _record(self, rec: Record) -> None:
        with self._lock:
            self._records.append(rec)

    # -- proxying ----------------------------------------------------------------------------

    def _pick(self) -> str:
        return CANDIDATE if self._rng.random() * 100 < self._weight else STABLE

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        target = self._pick()
        status, payload, resp_headers = await self._forward(target, request, body, headers)
        if target == CANDIDATE and self.failover and (status is None or status >= 500):
            status, payload, resp_headers = await self._forward(STABLE, request, body, headers)
        if status is None:
            return web.json_response({"error": "no predictor reachable"}, status=502)
        return web.Response(body=payload, status=status, headers=resp_headers)

    async def _forward(
        self, target: str, request: web.Request, body: bytes, headers: dict[str, str]
    ) -> tuple[int | None, bytes, dict[str, str]]:
        assert self._session is not None
        url = self.urls[target] + request.rel_url.path_qs
        t0 = time.perf_counter()
        started = time.time()
        try:
            async with self._session.request(
                request.method, url, data=body, headers=headers
            ) as resp:
                payload = await resp.read()
                status = resp.status
                out_headers = {
                    k: v for k, v in resp.headers.items() if k.lower() not in _HOP_HEADERS
                }
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            latency = time.perf_counter() - t0
            self._record(Record(started, target, False, latency))
            log.debug("router: %s unreachable (%s)", target, exc)
            return None, b"", {}
        latency = time.perf_counter() - t0
        score = None
        if status < 400 and "json" in out_headers.get("Content-Type", "").lower():
            score = self._score(payload)
        self._record(Record(started, target, status < 400, latency, score))
        return status, payload, out_headers

    def _score(self, payload: bytes) -> float | None:
        import json

        try:
            return self.extract_score(json.loads(payload))
        except (ValueError, TypeError):
            return None
