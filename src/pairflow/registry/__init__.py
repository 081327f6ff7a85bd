"""MLflow registry access: client with retries, names, champion lookup, logged models,
model card, governance, aliases and promotion history (``pairflow registry ...``)."""
