"""Shared fixtures: real local services (moto S3, MLflow server) and small synthetic data."""

from __future__ import annotations

from pathlib import Path

import pytest

from pairflow.demo.synthetic import GenerateSummary, generate_dataset

pytest_plugins = ["tests.fixtures_s3", "tests.fixtures_mlflow", "tests.kfp_fake"]


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> GenerateSummary:
    """80 synthetic rows with every defect kind injected (read-only: copy before mutating)."""
    out: Path = tmp_path_factory.mktemp("small-dataset")
    return generate_dataset(out, 80, seed=11)


@pytest.fixture(scope="session")
def untrained_clip(
    tmp_path_factory: pytest.TempPathFactory, small_dataset: GenerateSummary
) -> Path:
    """A tiny random-weight CLIP directory (tokenizer fitted on the small dataset's captions).

    Its scores carry no meaning: pipeline tests use it with ``clip_filter.top_fraction``.
    """
    import pandas as pd

    from pairflow.models.scratch import save_untrained_clip

    captions = [str(c) for c in pd.read_parquet(small_dataset.manifest)["caption"]]
    return save_untrained_clip(tmp_path_factory.mktemp("untrained-clip") / "clip", captions)
