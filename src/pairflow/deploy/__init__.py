"""Canary deploy: the controller, its statistical analysis, and backends (local, kserve).

Keep this file free of heavy imports: ``pairflow.config`` imports ``deploy.settings``.
"""
