"""Serving: the KServe custom predictor, dynamic micro-batching and Prometheus metrics.

Keep this file free of heavy imports: ``pairflow.config`` imports ``serve.settings``.
"""
