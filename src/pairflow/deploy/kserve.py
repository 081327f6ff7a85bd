"""The ``kserve`` backend: an InferenceService (serverless mode) and Prometheus.

KServe's canary in serverless (Knative) mode: changing the predictor's ``storageUri`` with
``spec.predictor.canaryTrafficPercent`` set creates a new revision that gets that share of
traffic while the previous ready revision keeps the rest. Setting the percent to 0 rolls
back; removing the field sends everything to the latest revision (promotion).

Per-version samples come from the predictor's Prometheus metrics (labelled
``model_version``) over the same window for both revisions: request and error counters,
and the latency and pair-score histograms, expanded to one sample per observation at its
bucket's upper bound, so the same rank tests as the local backend apply. A failed or
malformed Prometheus answer raises :class:`MetricsUnavailable` (a failed step, never a
pass).
"""

from __future__ import annotations

import json
import logging
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Protocol

import numpy as np

from pairflow.deploy.aliases import Rollout
from pairflow.deploy.analysis import Samples
from pairflow.deploy.backend import MetricsUnavailable
from pairflow.deploy.settings import DeployConfig
from pairflow.errors import PairflowError

log = logging.getLogger("pairflow.deploy.kserve")


def _api_errors() -> tuple[type[BaseException], ...]:
    from kubernetes.client.exceptions import ApiException

    return (ApiException, OSError)


_API_ERRORS = _api_errors()
GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
CANARY_PATH = "/spec/predictor/canaryTrafficPercent"


class KServeError(PairflowError):
    """The InferenceService cannot be read, patched or made ready."""


class CustomObjects(Protocol):
    """The part of ``kubernetes.client.CustomObjectsApi`` the backend uses."""

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any: ...

    def patch_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str, body: Any
    ) -> Any: ...


class Prometheus:
    """Instant queries against the Prometheus HTTP API (``/api/v1/query``)."""

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s

    def query(self, promql: str, at: float) -> list[dict[str, Any]]:
        qs = urllib.parse.urlencode({"query": promql, "time": f"{at:.3f}"})
        try:
            with urllib.request.urlopen(
                f"{self.url}/api/v1/query?{qs}", timeout=self.timeout_s
            ) as resp:
                body = json.loads(resp.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise MetricsUnavailable(f"prometheus {self.url}: query failed ({exc})") from exc
        if body.get("status") != "success" or body.get("data", {}).get("resultType") != "vector":
            raise MetricsUnavailable(f"prometheus {self.url}: bad answer to {promql!r}: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result


def _value(series: dict[str, Any]) -> float:
    v = float(series["value"][1])
    return 0.0 if math.isnan(v) else v


def histogram_samples(buckets: dict[float, float]) -> np.ndarray:
    """Cumulative bucket counts (``le`` → count) → one sample per observation.

    Each observation is placed at its bucket's upper bound; those in ``+Inf`` at twice the
    largest finite bound.
    """
    if not buckets:
        return np.zeros(0)
    bounds = sorted(buckets)
    finite = [b for b in bounds if math.isfinite(b)]
    top = 2 * finite[-1] if finite else 1.0
    out: list[np.ndarray] = []
    prev = 0.0
    for b in bounds:
        n = max(0, round(buckets[b] - prev))
        prev = max(prev, buckets[b])
        out.append(np.full(n, b if math.isfinite(b) else top))
    return np.concatenate(out) if out else np.zeros(0)


class KServeBackend:
    """Canary through ``canaryTrafficPercent`` of one InferenceService; samples from Prometheus.

    ``api`` is a ``CustomObjectsApi`` (tests pass an in-memory fake of the Kubernetes API).
    """

    name = "kserve"

    def __init__(
        self,
        api: CustomObjects,
        prometheus: Prometheus,
        rollout: Rollout,
        cfg: DeployConfig,
        *,
        poll_s: float = 2.0,
    ) -> None:
        self.api = api
        self.prom = prometheus
        self.rollout = rollout
        self.cfg = cfg
        self.ns = cfg.kserve.namespace
        self.isvc = cfg.kserve.inference_service
        self.poll_s = poll_s

    @classmethod
    def from_config(cls, rollout: Rollout, cfg: DeployConfig) -> KServeBackend:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        prom = Prometheus(cfg.kserve.prometheus_url, cfg.kserve.query_timeout_s)
        return cls(client.CustomObjectsApi(), prom, rollout, cfg)

    # -- Kubernetes --------------------------------------------------------------------------

    def _get(self) -> dict[str, Any]:
        try:
            obj = self.api.get_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, self.isvc)
        except _API_ERRORS as exc:
            raise KServeError(
                f"InferenceService {self.ns}/{self.isvc}: cannot read ({exc})"
            ) from exc
        return dict(obj)

    def _patch(self, ops: list[dict[str, Any]]) -> None:
        """A JSON patch (a list body makes the client send application/json-patch+json)."""
        try:
            self.api.patch_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, self.isvc, ops)
        except _API_ERRORS as exc:
            raise KServeError(
                f"InferenceService {self.ns}/{self.isvc}: patch failed ({exc})"
            ) from exc
        log.info("patched %s/%s: %s", self.ns, self.isvc, ops)

    def storage_uri(self) -> str:
        return self.cfg.kserve.storage_uri_template.format(
            model_uri=self.rollout.uri(self.rollout.candidate), version=self.rollout.candidate
        )

    def start(self) -> None:
        """Roll the candidate's revision out at 0% and wait until it is ready."""
        self._patch(
            [
                {"op": "add", "path": CANARY_PATH, "value": 0},
                {
                    "op": "add",
                    "path": "/spec/predictor/model/storageUri",
                    "value": self.storage_uri(),
                },
            ]
        )
        deadline = time.monotonic() + self.cfg.kserve.ready_timeout_s
        while True:
            problem = self._not_ready(self._get())
            if problem is None:
                return
            if time.monotonic() > deadline:
                raise KServeError(f"InferenceService {self.ns}/{self.isvc}: {problem}")
            time.sleep(self.poll_s)

    @staticmethod
    def _not_ready(obj: dict[str, Any]) -> str | None:
        status = obj.get("status") or {}
        ready = next((c for c in status.get("conditions", []) if c.get("type") == "Ready"), None)
        if ready is None or ready.get("status") != "True":
            msg = (ready or {}).get("message", "no Ready condition")
            return f"not ready ({msg})"
        pred = (status.get("components") or {}).get("predictor") or {}
        created, ready_rev = pred.get("latestCreatedRevision"), pred.get("latestReadyRevision")
        if created and ready_rev and created != ready_rev:
            return f"canary revision {created} not ready (latest ready {ready_rev})"
        return None

    def set_weight(self, percent: int) -> None:
        self._patch([{"op": "add", "path": CANARY_PATH, "value": int(percent)}])

    def rollback(self) -> None:
        self.set_weight(0)

    def promote(self) -> None:
        self._patch([{"op": "remove", "path": CANARY_PATH}])

    def health(self) -> str | None:
        problem = self._not_ready(self._get())
        return None if problem is None else f"InferenceService {self.isvc}: {problem}"

    def bake(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        return None

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "inference_service": f"{self.ns}/{self.isvc}",
            "prometheus": self.prom.url,
            "storage_uri": self.storage_uri(),
        }

    # -- Prometheus --------------------------------------------------------------------------

    def _selector(self, version: str) -> str:
        # model_name is the name the predictor serves (serve.model_name), not the registered
        # model's name: that is the label pairflow.serve.metrics puts on every series
        served = self.cfg.kserve.served_model_name
        return f'namespace="{self.ns}",model_name="{served}",model_version="{version}"'

    def _sum(self, metric: str, version: str, rng: str, at: float) -> float:
        q = f"sum(increase({metric}{{{self._selector(version)}}}[{rng}]))"
        return sum(_value(s) for s in self.prom.query(q, at))

    def _buckets(self, metric: str, version: str, rng: str, at: float) -> np.ndarray:
        q = f"sum by (le) (increase({metric}_bucket{{{self._selector(version)}}}[{rng}]))"
        buckets: dict[float, float] = {}
        for s in self.prom.query(q, at):
            try:
                buckets[float(s["metric"]["le"])] = _value(s)
            except (KeyError, ValueError) as exc:
                raise MetricsUnavailable(f"prometheus: bucket without le in {s}") from exc
        return histogram_samples(buckets)

    def samples(self, version: str, start: float, end: float) -> Samples:
        rng = f"{max(1, round(end - start))}s"
        requests = round(self._sum("pairflow_predictor_requests_total", version, rng, end))
        errors = round(self._sum("pairflow_predictor_errors_total", version, rng, end))
        return Samples(
            requests=requests,
            errors=min(errors, requests),
            latencies=self._buckets("pairflow_predictor_latency_seconds", version, rng, end),
            scores=self._buckets("pairflow_predictor_pair_score", version, rng, end),
        )

    def window(self, start: float, end: float) -> tuple[Samples, Samples]:
        assert self.rollout.stable is not None
        return (
            self.samples(self.rollout.stable, start, end),
            self.samples(self.rollout.candidate, start, end),
        )
