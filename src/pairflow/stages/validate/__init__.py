"""Validate: per-row checks (images decoded once) and the dataset-level data contract."""
