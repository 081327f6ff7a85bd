"""A weighted HTTP reverse proxy on 127.0.0.1 in front of the stable and candidate predictors.

Each request goes to the candidate with probability ``weight``% (else stable); weights change
atomically between requests, so requests in flight finish where they started and no client
request fails during a switch or a rollback. With ``failover`` on, a request the candidate
fails (5xx or connection error: e.g. the process died) is retried once on stable: the client
gets stable's answer, the failure still counts against the candidate.

Every upstream attempt is recorded (:class:`pairflow.stages.deploy.analysis.Record`): time, backend,
outcome, latency, the pair score found in the response (``score_of``) and its top-1 answer
(``answer_of``) with the request's key and reference (``X-Pairflow-Key`` /
``X-Pairflow-Reference`` headers). With ``shadow`` on, a keyed request the candidate answers
whose key stable has not answered yet is also sent to stable in the background, once per
key; that shadow answer is kept for the paired quality comparison only (not in the records:
no latency or error of it is analysed), so every candidate answer has stable's beside it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any, TypeVar

import aiohttp
from aiohttp import web

from pairflow.stages.deploy.analysis import Record

log = logging.getLogger("pairflow.stages.deploy.router")

T = TypeVar("T")
STABLE, CANDIDATE = "stable", "candidate"
_HOP_HEADERS = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}
)


KEY_HEADER, REFERENCE_HEADER = "X-Pairflow-Key", "X-Pairflow-Reference"


def answer_of(body: Any) -> str | None:
    """A predictor response's top-1 answer: a classifier's ``label``, or the index of the
    highest of several pair scores (the caption a CLIP model ranks first); None otherwise."""
    if not isinstance(body, dict):
        return None
    preds = body.get("predictions")
    if isinstance(preds, list) and preds and isinstance(preds[0], dict):
        label = preds[0].get("label")
        if isinstance(label, str):
            return label
    scores: list[float] = []
    for item in preds if isinstance(preds, list) else body.get("scores") or []:
        if isinstance(item, int | float) and not isinstance(item, bool):
            scores.append(float(item))
        elif isinstance(item, dict) and isinstance(item.get("score"), int | float):
            scores.append(float(item["score"]))
    if len(scores) < 2 or any(s != s for s in scores):
        return None
    return str(max(range(len(scores)), key=lambda i: scores[i]))


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
        shadow: bool = True,
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
        self.shadow = shadow
        self._stable_answers: dict[str, str] = {}
        self._shadow_tasks: set[asyncio.Task[None]] = set()
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
        for task in list(self._shadow_tasks):
            task.cancel()
        if self._shadow_tasks:
            await asyncio.gather(*self._shadow_tasks, return_exceptions=True)
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

    def stable_answers(self) -> dict[str, str]:
        """Stable's top-1 answer per request key (served or shadowed)."""
        with self._lock:
            return dict(self._stable_answers)

    def _record(self, rec: Record) -> None:
        with self._lock:
            self._records.append(rec)
            if rec.backend == STABLE and rec.ok and rec.key and rec.answer is not None:
                self._stable_answers.setdefault(rec.key, rec.answer)

    # -- proxying ----------------------------------------------------------------------------

    def _pick(self) -> str:
        return CANDIDATE if self._rng.random() * 100 < self._weight else STABLE

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_HEADERS}
        target = self._pick()
        tags = (request.headers.get(KEY_HEADER), request.headers.get(REFERENCE_HEADER))
        status, payload, resp_headers = await self._forward(target, request, body, headers, tags)
        if target == CANDIDATE and self.failover and (status is None or status >= 500):
            status, payload, resp_headers = await self._forward(
                STABLE, request, body, headers, tags
            )
        key = tags[0]
        if self.shadow and target == CANDIDATE and key and key not in self.stable_answers():
            task = asyncio.create_task(self._shadow(request, body, headers, key))
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)
        if status is None:
            return web.json_response({"error": "no predictor reachable"}, status=502)
        return web.Response(body=payload, status=status, headers=resp_headers)

    async def _shadow(
        self, request: web.Request, body: bytes, headers: dict[str, str], key: str
    ) -> None:
        """Stable's answer to a request the candidate served (kept by key, not recorded)."""
        assert self._session is not None
        url = self.urls[STABLE] + request.rel_url.path_qs
        try:
            async with self._session.request(
                request.method, url, data=body, headers=headers
            ) as resp:
                payload = await resp.read()
                if resp.status >= 400:
                    return
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            log.debug("router: shadow request to stable failed (%s)", exc)
            return
        _, answer = self._read(payload)
        if answer is not None:
            with self._lock:
                self._stable_answers.setdefault(key, answer)

    async def _forward(
        self,
        target: str,
        request: web.Request,
        body: bytes,
        headers: dict[str, str],
        tags: tuple[str | None, str | None] = (None, None),
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
            self._record(Record(started, target, False, latency, None, *tags))
            log.debug("router: %s unreachable (%s)", target, exc)
            return None, b"", {}
        latency = time.perf_counter() - t0
        score, answer = None, None
        if status < 400 and "json" in out_headers.get("Content-Type", "").lower():
            score, answer = self._read(payload)
        key, reference = tags
        self._record(Record(started, target, status < 400, latency, score, key, answer, reference))
        return status, payload, out_headers

    def _read(self, payload: bytes) -> tuple[float | None, str | None]:

        try:
            body = json.loads(payload)
        except (ValueError, TypeError):
            return None, None
        return self.extract_score(body), answer_of(body)
