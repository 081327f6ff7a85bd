"""Evaluation: retrieval and classifier metrics, champion comparison with paired-bootstrap
intervals, the rollout gate, and the drift report.

Keep this file free of heavy imports: ``pairflow.config`` imports ``evaluate.settings``.
"""
