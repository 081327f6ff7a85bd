"""MLflow registry: model logging, versions, aliases, lineage, model card, promotion history.

Keep this file free of heavy imports: ``pairflow.config`` imports ``registry.settings``.
"""
