"""Drift between a reference and current rows (Evidently column tests and embedding domain
classifiers), shared by evaluate (training data) and monitor (served traffic)."""
