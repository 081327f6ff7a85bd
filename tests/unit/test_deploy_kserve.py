"""The kserve backend's API calls against a fake Kubernetes API and a fake Prometheus.

No cluster exists here, so ``FakeCustomObjects`` is an in-memory stand-in for
``kubernetes.client.CustomObjectsApi`` (it applies JSON patches to one InferenceService and
reports its Ready condition), and Prometheus is a real HTTP server on 127.0.0.1 (started in
the test) that answers ``/api/v1/query`` from canned per-version series.
"""

from __future__ import annotations

import copy
import json
import re
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from pairflow.deploy.aliases import Rollout
from pairflow.deploy.backend import MetricsUnavailable
from pairflow.deploy.controller import PROMOTED, ROLLED_BACK, run_canary
from pairflow.deploy.kserve import (
    GROUP,
    PLURAL,
    VERSION,
    KServeBackend,
    KServeError,
    Prometheus,
    histogram_samples,
)
from pairflow.deploy.settings import DeployConfig

ROLL = Rollout(name="pairflow-clip", stable="1", candidate="2")


class FakeCustomObjects:
    """In-memory CustomObjectsApi for one InferenceService; applies add/remove JSON patches."""

    def __init__(self) -> None:
        self.obj: dict[str, Any] = {
            "spec": {"predictor": {"model": {"storageUri": "models:/pairflow-clip/1"}}},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "components": {
                    "predictor": {"latestCreatedRevision": "r2", "latestReadyRevision": "r2"}
                },
            },
        }
        self.patches: list[list[dict[str, Any]]] = []

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any:
        assert (group, version, plural, namespace, name) == (GROUP, VERSION, PLURAL, "ml", "clip")
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any:
        assert (group, version, plural) == (GROUP, VERSION, PLURAL)
        assert isinstance(body, list)  # JSON patch
        self.patches.append(body)
        for op in body:
            *parents, leaf = op["path"].strip("/").split("/")
            node = self.obj
            for p in parents:
                node = node.setdefault(p, {})
            if op["op"] == "add":
                node[leaf] = op["value"]
            elif op["op"] == "remove":
                del node[leaf]  # KeyError like a 422 when the field is missing
        return copy.deepcopy(self.obj)

    @property
    def canary(self) -> Any:
        return self.obj["spec"]["predictor"].get("canaryTrafficPercent", "absent")


def _served_metric_names() -> set[str]:
    """Series names ``pairflow serve`` exports on /metrics (counters with ``_total``)."""
    from pairflow.serve import metrics

    out = set()
    for m in (metrics.REQUESTS, metrics.ERRORS, metrics.LATENCY, metrics.PAIR_SCORE):
        name = m._name  # prometheus_client strips _total from counters' names
        out.add(f"{name}_total" if m._type == "counter" else name)
    return out


def _series(version_data: dict[str, dict[str, Any]]) -> Any:
    def answer(query: str) -> list[dict[str, Any]]:
        version = re.search(r'model_version="(\w+)"', query)
        assert version is not None and 'namespace="ml"' in query
        # the predictor labels its series with its served name (serve.model_name)
        assert 'model_name="pairflow"' in query, query
        metric = re.search(r"(pairflow_\w+?)(?:_bucket)?\{", query)
        assert metric is not None and metric.group(1) in _served_metric_names(), query
        d = version_data[version.group(1)]
        if "_bucket" in query:
            key = "lat" if "latency" in query else "score"
            return [{"metric": {"le": le}, "value": [0, str(v)]} for le, v in d[key].items()]
        key = "requests" if "requests_total" in query else "errors"
        return [{"metric": {}, "value": [0, str(d[key])]}]

    return answer


@pytest.fixture()
def prometheus() -> Iterator[tuple[str, dict[str, Any]]]:
    state: dict[str, Any] = {"answer": None, "queries": []}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
            state["queries"].append(q["query"][0])
            if state["answer"] is None:
                self.send_response(503)
                self.end_headers()
                return
            result = state["answer"](q["query"][0])
            body = json.dumps(
                {"status": "success", "data": {"resultType": "vector", "result": result}}
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", state
    server.shutdown()


def _cfg() -> DeployConfig:
    cfg = DeployConfig(steps=[20, 100], bake_s=0.2, check_interval_s=0.1, min_requests=50)
    cfg.kserve.namespace, cfg.kserve.inference_service = "ml", "clip"
    cfg.analysis.warmup_s = 0
    return cfg


def _good(n: int, errors: int = 0, slow: bool = False) -> dict[str, Any]:
    lat = {"0.01": n * 0.5, "0.025": n * 0.95, "0.05": n, "+Inf": n}
    if slow:
        lat = {"0.01": 0, "0.025": n * 0.05, "0.05": n * 0.2, "0.1": n * 0.5, "0.25": n, "+Inf": n}
    score = {"0.2": n * 0.2, "0.3": n * 0.7, "0.4": n, "+Inf": n}
    return {"requests": n, "errors": errors, "lat": lat, "score": score}


def test_promotion_patches_percent_then_removes_it(
    prometheus: tuple[str, dict[str, Any]],
) -> None:
    url, state = prometheus
    state["answer"] = _series({"1": _good(400), "2": _good(100)})
    api = FakeCustomObjects()
    backend = KServeBackend(api, Prometheus(url), ROLL, _cfg(), poll_s=0.01)
    backend.start()
    assert api.obj["spec"]["predictor"]["model"]["storageUri"] == "models:/pairflow-clip/2"
    result = run_canary(backend, _cfg())
    assert result.decision == PROMOTED, result.reasons
    assert [p[0]["value"] for p in api.patches[1:-1]] == [20]
    assert api.patches[-1] == [{"op": "remove", "path": "/spec/predictor/canaryTrafficPercent"}]
    assert api.canary == "absent"
    assert any('model_version="1"' in q for q in state["queries"])
    step = result.steps[0].to_json()
    assert step["candidate"]["requests"] == 100 and step["stable"]["requests"] == 400


def test_regression_sets_percent_to_zero(prometheus: tuple[str, dict[str, Any]]) -> None:
    url, state = prometheus
    state["answer"] = _series({"1": _good(400), "2": _good(100, errors=9, slow=True)})
    api = FakeCustomObjects()
    backend = KServeBackend(api, Prometheus(url), ROLL, _cfg(), poll_s=0.01)
    result = run_canary(backend, _cfg())
    assert result.decision == ROLLED_BACK
    assert api.canary == 0
    text = " ".join(result.reasons)
    assert "error_rate" in text and "latency_p95" in text


def test_prometheus_down_fails_the_step(prometheus: tuple[str, dict[str, Any]]) -> None:
    url, _ = prometheus  # answers 503
    api = FakeCustomObjects()
    result = run_canary(KServeBackend(api, Prometheus(url), ROLL, _cfg()), _cfg())
    assert result.decision == ROLLED_BACK
    assert "metrics unavailable" in result.reasons[0]
    with pytest.raises(MetricsUnavailable, match="prometheus"):
        Prometheus(url).query("up", 0)


def test_no_traffic_is_inconclusive_then_fails(prometheus: tuple[str, dict[str, Any]]) -> None:
    url, state = prometheus
    empty = {"requests": 0, "errors": 0, "lat": {}, "score": {}}
    state["answer"] = _series({"1": empty, "2": empty})
    api = FakeCustomObjects()
    cfg = _cfg()
    cfg.analysis.max_extensions = 1
    result = run_canary(KServeBackend(api, Prometheus(url), ROLL, cfg), cfg)
    assert result.decision == ROLLED_BACK
    assert result.steps[0].bakes == 2
    assert "inconclusive" in result.reasons[-1]


def test_unready_canary_revision_is_reported() -> None:
    api = FakeCustomObjects()
    api.obj["status"]["components"]["predictor"]["latestCreatedRevision"] = "r3"
    cfg = _cfg()
    cfg.kserve.ready_timeout_s = 0.05
    backend = KServeBackend(api, Prometheus("http://127.0.0.1:9"), ROLL, cfg, poll_s=0.01)
    assert "r3 not ready" in (backend.health() or "")
    with pytest.raises(KServeError, match="r3 not ready"):
        backend.start()


def test_histogram_expansion() -> None:
    s = histogram_samples({0.1: 2.0, 0.5: 5.0, float("inf"): 6.0})
    assert np.array_equal(s, [0.1, 0.1, 0.5, 0.5, 0.5, 1.0])
    assert histogram_samples({}).size == 0
