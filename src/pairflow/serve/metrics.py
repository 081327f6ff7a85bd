"""Prometheus metrics of the predictor, labelled with the served model version.

Names are a contract (the PrometheusRule in manifests/ and the canary controller, which
scrapes ``/metrics`` of each process, rely on them):

- ``pairflow_predictor_requests_total{model_name, model_version, protocol}``
- ``pairflow_predictor_errors_total{model_name, model_version, protocol, kind}``:
  ``kind`` is ``client`` (4xx: bad input, limits) or ``server`` (5xx)
- ``pairflow_predictor_latency_seconds{model_name, model_version, protocol}`` (histogram)
- ``pairflow_predictor_batch_size{model_name, model_version}`` (histogram of forward passes)
- ``pairflow_predictor_pair_score{model_name, model_version}`` (histogram of the cosine
  similarity of every scored pair: the online quality proxy)
- ``pairflow_predictor_info{model_name, model_version, variant, ref}`` = 1
- ``pairflow_predictor_rejected_total{model_name, reason}``: requests the guard refused
  before the model saw them (``body_too_large``, ``body_timeout``, ``overloaded``,
  ``queue_timeout``, ``bad_request``, ``disconnected``)

They live in prometheus_client's default registry, which KServe's ``/metrics`` serves.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.075,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SCORE_BUCKETS = tuple(round(-1.0 + 0.1 * i, 1) for i in range(21))

_BASE = ("model_name", "model_version")

REQUESTS = Counter(
    "pairflow_predictor_requests", "Inference requests received.", [*_BASE, "protocol"]
)
ERRORS = Counter(
    "pairflow_predictor_errors",
    "Inference requests that failed (kind: client = 4xx, server = 5xx).",
    [*_BASE, "protocol", "kind"],
)
LATENCY = Histogram(
    "pairflow_predictor_latency_seconds",
    "Inference request latency inside the predictor.",
    [*_BASE, "protocol"],
    buckets=LATENCY_BUCKETS,
)
BATCH_SIZE = Histogram(
    "pairflow_predictor_batch_size",
    "Items per forward pass.",
    list(_BASE),
    buckets=BATCH_BUCKETS,
)
PAIR_SCORE = Histogram(
    "pairflow_predictor_pair_score",
    "Cosine similarity of each scored image-caption pair (online quality proxy).",
    list(_BASE),
    buckets=SCORE_BUCKETS,
)
INFO = Gauge(
    "pairflow_predictor_info",
    "The model this process serves (value 1).",
    [*_BASE, "variant", "ref"],
)
REJECTED = Counter(
    "pairflow_predictor_rejected",
    "Requests refused by the request guard before reaching the model.",
    ["model_name", "reason"],
)


def rejected(model_name: str, reason: str) -> None:
    REJECTED.labels(model_name, reason).inc()


@dataclass(frozen=True)
class ModelMetrics:
    """The metric children of one served model (name + version)."""

    model_name: str
    model_version: str

    def announce(self, variant: str, ref: str) -> None:
        INFO.labels(self.model_name, self.model_version, variant, ref).set(1)

    def request(self, protocol: str) -> None:
        REQUESTS.labels(self.model_name, self.model_version, protocol).inc()

    def error(self, protocol: str, kind: str) -> None:
        ERRORS.labels(self.model_name, self.model_version, protocol, kind).inc()

    def latency(self, protocol: str, seconds: float) -> None:
        LATENCY.labels(self.model_name, self.model_version, protocol).observe(seconds)

    def batch(self, size: int) -> None:
        BATCH_SIZE.labels(self.model_name, self.model_version).observe(size)

    def scores(self, values: list[float]) -> None:
        child = PAIR_SCORE.labels(self.model_name, self.model_version)
        for v in values:
            child.observe(v)
