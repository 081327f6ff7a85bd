"""The weighted router and replayer against two real HTTP servers started in the test."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest
from tests.local_http import BackgroundHTTPServer

from pairflow.stages.deploy.replay import ReplayStats, replay
from pairflow.stages.deploy.router import CANDIDATE, STABLE, WeightedRouter, score_of


def _server(score: float, status: int = 200) -> BackgroundHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            body = json.dumps({"predictions": [{"score": score}]}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    return BackgroundHTTPServer(Handler)


@pytest.fixture()
def upstreams() -> Iterator[dict[str, Any]]:
    servers = {"good": _server(0.3), "other": _server(0.1), "broken": _server(0.0, 500)}
    yield {k: srv.url for k, srv in servers.items()}
    for srv in servers.values():
        srv.close()


def _send(router: WeightedRouter, seconds: float, rate: float = 150) -> Any:
    pairs = [{"id": "a", "image_b64": "x", "caption": "a red circle"}]
    return asyncio.run(
        replay(
            router.url,
            pairs,
            seconds,
            path="/v1/models/m:predict",
            rate_per_s=rate,
            concurrency=8,
            timeout_s=5,
        )
    )


def _send_at_least(router: WeightedRouter, requests: int, max_seconds: float = 30) -> Any:
    """Replay in short bursts until ``requests`` were sent: a slow CI machine sends fewer per
    second, and the assertions below need a sample size, not a rate."""
    total = ReplayStats()
    deadline = time.monotonic() + max_seconds
    while total.sent < requests and time.monotonic() < deadline:
        total.add(_send(router, 0.5))
    return total


def test_weights_split_traffic_and_scores_are_recorded(upstreams: dict[str, str]) -> None:
    router = WeightedRouter(upstreams["good"], upstreams["other"], seed=1)
    router.start()
    try:
        router.set_weight(30)
        stats = _send_at_least(router, 200)
        recs = router.records()
    finally:
        router.close()
    assert stats.failed == 0 and stats.ok == stats.sent >= 200
    assert len(recs) == stats.sent
    share = sum(r.backend == CANDIDATE for r in recs) / len(recs)
    assert 0.18 < share < 0.42
    assert {r.score for r in recs if r.backend == STABLE} == {0.3}
    assert {r.score for r in recs if r.backend == CANDIDATE} == {0.1}


def test_switching_weights_under_load_fails_no_client_request(upstreams: dict[str, str]) -> None:
    router = WeightedRouter(upstreams["good"], upstreams["other"])
    router.start()
    stop = threading.Event()

    def flip() -> None:
        w = 0
        while not stop.is_set():
            w = 100 - w
            router.set_weight(w)
            time.sleep(0.01)

    flipper = threading.Thread(target=flip)
    flipper.start()
    try:
        stats = _send_at_least(router, 60)
    finally:
        stop.set()
        flipper.join()
    router.set_weight(0)  # rollback: afterwards nothing reaches the candidate
    mark = time.time()
    after = _send(router, 0.3)
    recs = router.records()
    router.close()
    assert stats.failed == 0 and stats.sent >= 60
    assert {r.backend for r in recs if r.t < mark} == {STABLE, CANDIDATE}
    assert after.failed == 0 and all(r.backend == STABLE for r in recs if r.t > mark + 0.01)


def test_failover_hides_candidate_errors_but_records_them(upstreams: dict[str, str]) -> None:
    router = WeightedRouter(upstreams["good"], upstreams["broken"], failover=True)
    router.start()
    try:
        router.set_weight(50)
        stats = _send_at_least(router, 30)
        recs = router.records()
    finally:
        router.close()
    assert stats.failed == 0
    cand = [r for r in recs if r.backend == CANDIDATE]
    assert cand and not any(r.ok for r in cand)


def test_score_of_understands_v1_and_v2() -> None:
    assert score_of({"predictions": [{"score": 0.2}, {"score": 0.4}]}) == pytest.approx(0.3)
    assert score_of({"outputs": [{"name": "score", "data": [0.5]}]}) == 0.5
    assert score_of({"predictions": [{"label": "circle"}]}) is None


def test_cli_rejects_a_model_uri_that_is_not_registered(tmp_path: Any) -> None:
    import subprocess
    import sys

    import pandas as pd

    manifest = tmp_path / "m.parquet"
    pd.DataFrame({"id": ["a"], "image": ["/x.png"], "caption": ["a circle"]}).to_parquet(manifest)
    args = ["deploy", "--model", "/some/dir", "--input", str(manifest), "--out", str(tmp_path)]
    res = subprocess.run(
        [sys.executable, "-m", "pairflow.cli", *args], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 2, res.stderr
    assert "'/some/dir': deploy needs a registered version" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
