"""The ``kserve`` backend: an InferenceService (Serverless mode) and Prometheus.

The InferenceService (``manifests/base/inferenceservice.yaml``) has one custom predictor
container (``kserve-container``) that runs ``pairflow serve --model $(MODEL_URI) --host 0.0.0.0``;
KServe allows exactly one predictor implementation, so there is no ``model``/``storageUri`` key
(KServe v0.20 ``pkg/apis/serving/v1beta1/predictor.go`` ``GetImplementations``). Every change is
a JSON patch (RFC 6902, what ``kubectl patch --type=json`` sends) computed against the live
object, with ``test`` ops that make it fail if the container or env var moved:

- start: the ``MODEL_URI`` env of the container is set to the candidate pinned as
  ``models:/NAME/VERSION`` (never an alias, which can move while the revision runs) and
  ``spec.predictor.canaryTrafficPercent`` to 0: Knative creates a new revision that gets 0%
  while the last rolled-out revision (stable) keeps 100%;
- each step: ``canaryTrafficPercent`` = the step's percent;
- rollback: ``canaryTrafficPercent`` 0 and ``MODEL_URI`` back to the stable version, so the
  spec again describes what serves all traffic;
- promote: ``canaryTrafficPercent`` removed: the latest revision (candidate) gets 100%.

Per-version counts (:mod:`pairflow.stages.deploy.counts`) come from the predictor's Prometheus
metrics
(labelled ``model_version``) over the same window for both revisions: request and error
counters and the cumulative latency histogram buckets, at the bounds both revisions share.
Prometheus holds no per-request answers, so there is no paired quality comparison here.
``increase()`` needs several scrapes inside its range: a window shorter than
``kserve.min_window_scrapes`` × ``kserve.scrape_interval_s`` yields no samples (inconclusive,
never a pass), and a bake shorter than that is refused. A failed or malformed Prometheus answer
raises :class:`MetricsUnavailable` (a failed step, never a pass).
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

from pairflow.errors import PairflowError
from pairflow.kubeflow import names
from pairflow.serve.metrics import LATENCY_BUCKETS as SERVE_LATENCY_BUCKETS
from pairflow.stages.deploy.aliases import Rollout
from pairflow.stages.deploy.backend import MetricsUnavailable
from pairflow.stages.deploy.counts import ArmCounts, LatencyHistogram, WindowCounts
from pairflow.stages.deploy.settings import DeployConfig

log = logging.getLogger("pairflow.stages.deploy.kserve")


def _api_errors() -> tuple[type[BaseException], ...]:
    # lazy: kubernetes (slow to import); only this path needs it
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


LATENCY_BOUNDS: tuple[float, ...] = (*SERVE_LATENCY_BUCKETS, math.inf)


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


def check_windows(cfg: DeployConfig) -> None:
    """A step's bake must span ``min_window_scrapes`` scrape intervals, or nothing is judged."""
    k = cfg.kserve
    need = k.min_window_scrapes * k.scrape_interval_s
    if cfg.bake_s < need:
        raise KServeError(
            f"deploy.bake_s={cfg.bake_s} s is shorter than {k.min_window_scrapes} scrapes of "
            f"{k.scrape_interval_s} s (deploy.kserve.scrape_interval_s): set deploy.bake_s >= "
            f"{need:g}"
        )


def _container_index(obj: dict[str, Any]) -> tuple[int, int]:
    """(container index, MODEL_URI env index) of the predictor container in ``obj``."""
    name = (obj.get("metadata") or {}).get("name", "?")
    containers = ((obj.get("spec") or {}).get("predictor") or {}).get("containers") or []
    for i, c in enumerate(containers):
        if c.get("name") == names.PREDICTOR_CONTAINER:
            for j, env in enumerate(c.get("env") or []):
                if env.get("name") == names.MODEL_URI_ENV:
                    return i, j
            raise KServeError(
                f"InferenceService {name}: container {names.PREDICTOR_CONTAINER} has no "
                f"{names.MODEL_URI_ENV} env var (see manifests/base/inferenceservice.yaml)"
            )
    raise KServeError(
        f"InferenceService {name}: no predictor container named {names.PREDICTOR_CONTAINER} "
        "(see manifests/base/inferenceservice.yaml)"
    )


def _model_uri_ops(obj: dict[str, Any], model_uri: str) -> list[dict[str, Any]]:
    i, j = _container_index(obj)
    env = f"/spec/predictor/containers/{i}/env/{j}"
    return [
        {"op": "test", "path": f"/spec/predictor/containers/{i}/name",
         "value": names.PREDICTOR_CONTAINER},
        {"op": "test", "path": f"{env}/name", "value": names.MODEL_URI_ENV},
        {"op": "replace", "path": f"{env}/value", "value": model_uri},
    ]  # fmt: skip


def start_patch(obj: dict[str, Any], candidate_uri: str) -> list[dict[str, Any]]:
    """Candidate revision at 0%: pin its model URI, set canaryTrafficPercent 0."""
    if "@" in candidate_uri.removeprefix("models:/"):
        raise KServeError(f"candidate {candidate_uri!r}: an alias moves; pin a version")
    return [*_model_uri_ops(obj, candidate_uri), *weight_patch(0)]


def weight_patch(percent: int) -> list[dict[str, Any]]:
    if not 0 <= int(percent) <= 100:
        raise KServeError(f"canary percent {percent} is not in [0, 100]")
    return [{"op": "add", "path": CANARY_PATH, "value": int(percent)}]


def rollback_patch(obj: dict[str, Any], stable_uri: str) -> list[dict[str, Any]]:
    """All traffic back to stable, and the spec names the stable version again."""
    return [*weight_patch(0), *_model_uri_ops(obj, stable_uri)]


def promote_patch() -> list[dict[str, Any]]:
    """The latest revision (the candidate) takes all traffic."""
    return [{"op": "remove", "path": CANARY_PATH}]


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
        # lazy: kubernetes (slow to import); only this path needs it
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        check_windows(cfg)
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

    def pinned_uri(self, version: str) -> str:
        """The model URI a revision serves: ``models:/NAME/VERSION`` (or the template's)."""
        return self.cfg.kserve.model_uri_template.format(
            model_uri=self.rollout.uri(version), version=version
        )

    def start(self) -> None:
        """Roll the candidate's revision out at 0% and wait until it is ready."""
        self._patch(start_patch(self._get(), self.pinned_uri(self.rollout.candidate)))
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
        self._patch(weight_patch(percent))

    def rollback(self) -> None:
        assert self.rollout.stable is not None
        self._patch(rollback_patch(self._get(), self.pinned_uri(self.rollout.stable)))

    def promote(self) -> None:
        self._patch(promote_patch())

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
            "candidate_model_uri": self.pinned_uri(self.rollout.candidate),
            "window_min_s": self.min_window_s,
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

    def _buckets(self, metric: str, version: str, rng: str, at: float) -> dict[float, float]:
        q = f"sum by (le) (increase({metric}_bucket{{{self._selector(version)}}}[{rng}]))"
        buckets: dict[float, float] = {}
        for s in self.prom.query(q, at):
            try:
                buckets[float(s["metric"]["le"])] = _value(s)
            except (KeyError, ValueError) as exc:
                raise MetricsUnavailable(f"prometheus: bucket without le in {s}") from exc
        return buckets

    @property
    def min_window_s(self) -> float:
        k = self.cfg.kserve
        return k.min_window_scrapes * k.scrape_interval_s

    def samples(self, version: str, start: float, end: float) -> ArmCounts:
        """Counts of ``version`` in ``[start, end]``; none while the window holds fewer than
        ``min_window_scrapes`` scrapes (``increase`` over fewer points is mostly empty)."""
        empty = ArmCounts(0, 0, LatencyHistogram.empty(LATENCY_BOUNDS))
        if end - start < self.min_window_s:
            return empty
        rng = f"{max(1, round((end - start) * 1000))}ms"
        requests = self._sum("pairflow_predictor_requests_total", version, rng, end)
        errors = self._sum("pairflow_predictor_errors_total", version, rng, end)
        buckets = self._buckets("pairflow_predictor_latency_seconds", version, rng, end)
        if not buckets:
            buckets = dict.fromkeys(LATENCY_BOUNDS, 0.0)
        try:
            return ArmCounts.from_buckets(requests, errors, buckets)
        except ValueError as exc:
            raise MetricsUnavailable(f"prometheus: latency buckets of {version}: {exc}") from exc

    def window(self, start: float, end: float) -> WindowCounts:
        """Both revisions' counts; no paired quality (Prometheus holds no per-request
        answers), so a rollout that requires ``quality`` fails here with a metric gap."""
        assert self.rollout.stable is not None
        try:
            return WindowCounts.aligned(
                self.samples(self.rollout.stable, start, end),
                self.samples(self.rollout.candidate, start, end),
            )
        except ValueError as exc:
            raise MetricsUnavailable(f"prometheus: {exc}") from exc
