"""Serving: the KServe custom predictor, dynamic micro-batching, request limits,
Prometheus metrics and request logging (a runtime, not a pipeline step)."""
