"""Shared fixtures: real local services (moto S3, MLflow server) and small synthetic data."""

from __future__ import annotations

from pathlib import Path

import pytest

from pairflow.data.synthetic import GenerateSummary, generate_dataset

pytest_plugins = ["tests.fixtures_s3", "tests.fixtures_mlflow"]


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> GenerateSummary:
    """80 synthetic rows with every defect kind injected (read-only: copy before mutating)."""
    out: Path = tmp_path_factory.mktemp("small-dataset")
    return generate_dataset(out, 80, seed=11)
