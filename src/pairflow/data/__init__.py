"""Manifests, readers for every supported source, and the synthetic demo dataset."""
