"""The kserve backend's patches against the real InferenceService and CRD; a fake API server.

No cluster exists here. ``FakeCustomObjects`` stands in for the Kubernetes API server's custom
objects endpoint (``kubernetes.client.CustomObjectsApi``): it holds the InferenceService that
the real kustomize renders from manifests/, applies each JSON patch as the API server does
(RFC 6902 with ``test`` ops, k8s.io/apiserver ``pkg/endpoints/handlers/patch.go`` via
evanphx/json-patch; here the ``jsonpatch`` package), and, like the API server with KServe's
CRD and validating webhook installed, rejects any result that fails the upstream CRD schema
(KServe v0.20.0, stored in manifests/schemas) or KServe's exactly-one-predictor rule
(``pkg/apis/serving/v1beta1/component.go`` ``validateExactlyOneImplementation``).
Prometheus here is a real HTTP server on 127.0.0.1 answering ``/api/v1/query`` from canned
per-version series (tests/integration/test_kserve_prometheus.py uses a real Prometheus).
"""

from __future__ import annotations

import copy
import json
import re
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from typing import Any

import jsonpatch
import numpy as np
import pytest
from tests.local_http import BackgroundHTTPServer
from tests.manifests_render import find_object, render_overlay, validate_object

from pairflow.kubeflow import names
from pairflow.stages.deploy.aliases import Rollout
from pairflow.stages.deploy.backend import MetricsUnavailable
from pairflow.stages.deploy.controller import PROMOTED, ROLLED_BACK, run_canary
from pairflow.stages.deploy.kserve import (
    GROUP,
    PLURAL,
    VERSION,
    KServeBackend,
    KServeError,
    Prometheus,
    check_windows,
    histogram_samples,
    start_patch,
)
from pairflow.stages.deploy.settings import DeployConfig

ROLL = Rollout(name="pairflow-clip", stable="1", candidate="2")


def rendered_isvc(overlay: str = "prod") -> dict[str, Any]:
    return find_object(render_overlay(overlay), "InferenceService", names.INFERENCE_SERVICE)


class FakeCustomObjects:
    """The API server's custom-object endpoints for one InferenceService (see module doc)."""

    def __init__(self, obj: dict[str, Any] | None = None) -> None:
        self.obj: dict[str, Any] = copy.deepcopy(obj or rendered_isvc())
        self.ns = self.obj["metadata"]["namespace"]
        self.name = self.obj["metadata"]["name"]
        self.obj["status"] = {
            "conditions": [{"type": "Ready", "status": "True"}],
            "components": {
                "predictor": {"latestCreatedRevision": "r2", "latestReadyRevision": "r2"}
            },
        }
        self.patches: list[list[dict[str, Any]]] = []
        self.history: list[dict[str, Any]] = []

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any:
        assert (group, version, plural, namespace, name) == (
            GROUP, VERSION, PLURAL, self.ns, self.name,
        )  # fmt: skip
        return copy.deepcopy(self.obj)

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any:
        assert (group, version, plural, namespace, name) == (
            GROUP, VERSION, PLURAL, self.ns, self.name,
        )  # fmt: skip
        assert isinstance(body, list)  # a list body: the client sends application/json-patch
        new = jsonpatch.apply_patch(self.obj, body)  # raises on a failed test / missing path
        status = new.pop("status")
        validate_object(new)  # the CRD schema and the one-predictor rule, or a 422
        new["status"] = status
        self.obj = new
        self.patches.append(body)
        self.history.append(copy.deepcopy(new))
        return copy.deepcopy(new)

    @property
    def canary(self) -> Any:
        return self.obj["spec"]["predictor"].get("canaryTrafficPercent", "absent")

    @property
    def model_uri(self) -> str:
        (container,) = self.obj["spec"]["predictor"]["containers"]
        return str({e["name"]: e.get("value") for e in container["env"]}["MODEL_URI"])


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
        assert version is not None and f'namespace="{names.NAMESPACE}"' in query
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

    server = BackgroundHTTPServer(Handler)
    yield server.url, state
    server.close()


def _cfg() -> DeployConfig:
    cfg = DeployConfig(steps=[20, 100], bake_s=0.2, check_interval_s=0.1, min_requests=50)
    cfg.kserve.scrape_interval_s = 0.04  # 4 scrapes = 0.16 s < bake_s
    cfg.analysis.warmup_s = 0
    # Prometheus holds no per-request answers (no paired quality); minimum effects a
    # 100-request window has the power to detect
    cfg.analysis.metrics = ["error_rate", "latency_p95"]
    cfg.analysis.min_error_rate_increase = 0.1
    cfg.analysis.min_latency_exceedance = 0.3
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
    assert api.model_uri == "models:/pairflow-clip/2" and api.canary == 0
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
    backend.start()
    result = run_canary(backend, _cfg())
    assert result.decision == ROLLED_BACK
    assert api.canary == 0
    assert api.model_uri == "models:/pairflow-clip/1"  # the spec names stable again
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


def test_every_patch_leaves_a_valid_inference_service(
    prometheus: tuple[str, dict[str, Any]],
) -> None:
    """start, each step, promote; and start, a step, rollback: on each overlay's rendered
    InferenceService, each result passes the CRD schema and the one-predictor rule."""
    url, state = prometheus
    for overlay in ("dev", "prod"):
        for candidate, decision in (("2", PROMOTED), ("3", ROLLED_BACK)):
            bad = candidate == "3"
            errors = 9 if bad else 0
            state["answer"] = _series({"1": _good(400), candidate: _good(100, errors, bad)})
            api = FakeCustomObjects(rendered_isvc(overlay))
            cfg = _cfg()
            cfg.steps = [10, 50, 100]
            roll = Rollout("pairflow-clip", candidate=candidate, stable="1")
            backend = KServeBackend(api, Prometheus(url), roll, cfg, poll_s=0.01)
            backend.start()
            result = run_canary(backend, cfg)
            assert result.decision == decision, result.reasons
            canaries = [h["spec"]["predictor"].get("canaryTrafficPercent") for h in api.history]
            uris = [
                {e["name"]: e.get("value") for e in h["spec"]["predictor"]["containers"][0]["env"]}[
                    "MODEL_URI"
                ]
                for h in api.history
            ]
            if decision == PROMOTED:
                assert canaries == [0, 10, 50, None]
                assert set(uris) == {"models:/pairflow-clip/2"}
            else:
                assert canaries == [0, 10, 0]
                assert uris == ["models:/pairflow-clip/3"] * 2 + ["models:/pairflow-clip/1"]


def test_fake_api_server_rejects_what_kserve_rejects() -> None:
    """The fake refuses a storageUri on a custom container (two implementations) and the old
    backend's ``add /spec/predictor/model/storageUri`` onto a predictor without ``model``."""
    api = FakeCustomObjects()
    with pytest.raises(AssertionError, match="exactly one predictor implementation"):
        api.patch_namespaced_custom_object(
            GROUP, VERSION, api.ns, PLURAL, api.name,
            [{"op": "add", "path": "/spec/predictor/model", "value": {"storageUri": "s3://m"}}],
        )  # fmt: skip
    with pytest.raises(jsonpatch.JsonPointerException):
        api.patch_namespaced_custom_object(
            GROUP, VERSION, api.ns, PLURAL, api.name,
            [{"op": "add", "path": "/spec/predictor/model/storageUri", "value": "s3://m"}],
        )  # fmt: skip
    with pytest.raises(AssertionError, match="canaryTrafficPercent"):
        api.patch_namespaced_custom_object(
            GROUP, VERSION, api.ns, PLURAL, api.name,
            [{"op": "add", "path": "/spec/predictor/canaryTrafficPercent", "value": "10%"}],
        )  # fmt: skip
    moved = copy.deepcopy(api.obj)
    moved["spec"]["predictor"]["containers"][0]["env"].reverse()
    ops = start_patch(api.obj, "models:/pairflow-clip/2")
    with pytest.raises(jsonpatch.JsonPatchTestFailed):
        jsonpatch.apply_patch(moved, ops)  # the test ops guard against a moved env var


def test_alias_candidates_and_thin_windows_are_refused() -> None:
    with pytest.raises(KServeError, match="alias"):
        start_patch(rendered_isvc(), "models:/pairflow-clip@champion")
    no_env = rendered_isvc()
    no_env["spec"]["predictor"]["containers"][0]["env"] = []
    with pytest.raises(KServeError, match="MODEL_URI"):
        start_patch(no_env, "models:/pairflow-clip/2")
    cfg = DeployConfig()  # bake 20 s < 4 scrapes of 15 s
    assert cfg.kserve.scrape_interval_s == names.SCRAPE_INTERVAL_S
    with pytest.raises(KServeError, match=r"bake_s >= 60"):
        check_windows(cfg)
    cfg.bake_s = 60
    check_windows(cfg)


def test_windows_under_four_scrapes_are_not_analysed(
    prometheus: tuple[str, dict[str, Any]],
) -> None:
    url, state = prometheus
    state["answer"] = _series({"1": _good(400), "2": _good(100)})
    cfg = _cfg()
    backend = KServeBackend(FakeCustomObjects(), Prometheus(url), ROLL, cfg)
    thin = backend.samples("2", 100.0, 100.0 + 3.9 * cfg.kserve.scrape_interval_s)
    assert thin.requests == 0 and not state["queries"]
    assert backend.samples("2", 100.0, 100.0 + 4.01 * cfg.kserve.scrape_interval_s).requests == 100


def test_names_match_the_manifests() -> None:
    objs = render_overlay("prod")
    isvc = rendered_isvc()
    cfg = DeployConfig()
    assert (isvc["metadata"]["namespace"], isvc["metadata"]["name"]) == (
        cfg.kserve.namespace, cfg.kserve.inference_service,
    )  # fmt: skip
    (container,) = isvc["spec"]["predictor"]["containers"]
    assert container["name"] == names.PREDICTOR_CONTAINER
    assert container["args"][container["args"].index("--host") + 1] == "0.0.0.0"
    monitor = find_object(objs, "PodMonitor", names.INFERENCE_SERVICE)
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert endpoint["interval"] == f"{names.SCRAPE_INTERVAL_S:g}s"


def test_cli_dry_run_prints_every_patch_and_each_applies(tmp_path: Any) -> None:
    import subprocess

    import yaml
    from tests.manifests_render import MANIFESTS, kubectl
    from typer.testing import CliRunner

    from pairflow.cli import app

    rendered = subprocess.run(
        [kubectl(), "kustomize", str(MANIFESTS / "overlays" / "prod")],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    (tmp_path / "prod.yaml").write_text(rendered)
    argv = ["deploy", "--backend", "kserve", "--dry-run", "--model", "models:/pairflow-clip/7",
            "--stable", "6", "--isvc-file", str(tmp_path / "prod.yaml"),
            "--set", "deploy.bake_s=60"]  # fmt: skip
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, (res.output, res.exception)
    docs = list(yaml.safe_load_all(res.output))
    assert [d["action"] for d in docs] == [
        "start", "step 10%", "step 25%", "step 50%", "rollback", "promote",
    ]  # fmt: skip
    assert all(d["kubectl"].startswith("kubectl patch inferenceservice pairflow-predictor -n "
                                       "pairflow --type=json") for d in docs)  # fmt: skip
    isvc = rendered_isvc()
    state = isvc
    for doc in docs[:4]:  # start and every step, in order
        state = jsonpatch.apply_patch(state, doc["patch"])
        validate_object(state)
    env = {e["name"]: e.get("value") for e in state["spec"]["predictor"]["containers"][0]["env"]}
    assert env["MODEL_URI"] == "models:/pairflow-clip/7"
    assert state["spec"]["predictor"]["canaryTrafficPercent"] == 50
    for end, uri in ((docs[4], "models:/pairflow-clip/6"), (docs[5], "models:/pairflow-clip/7")):
        final = jsonpatch.apply_patch(state, end["patch"])
        validate_object(final)
        env = {
            e["name"]: e.get("value") for e in final["spec"]["predictor"]["containers"][0]["env"]
        }
        assert env["MODEL_URI"] == uri
    # a bake too short for 4 scrapes of the PodMonitor's interval is refused up front
    res = CliRunner().invoke(app, argv[:-2])
    assert res.exit_code != 0 and "bake_s >= 60" in str(res.exception)
