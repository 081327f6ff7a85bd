"""CLIP filter against real local services, and the demo's pretrained reference CLIP.

Loading is checked from a local directory, from S3 (a moto server) and from the MLflow model
registry (sqlite store, alias), exactly as the pipeline step loads a model, with a tiny CLIP
saved by the bootstrap (random weights: loading does not care). The pretrained reference
model (about 80 s on two cores, once per session) is checked for what the demo needs: it
separates matched from mismatched captions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pairflow.config import ClipFilterConfig, S3Config
from pairflow.data import s3 as s3io
from pairflow.data.sources import read_source
from pairflow.demo.reference_clip import (
    ensure_reference_clip,
    pretrain_reference_clip,
    read_reference_info,
)
from pairflow.demo.synthetic import GenerateSummary, generate_dataset
from pairflow.errors import PairflowError
from pairflow.models import clip as model_mod
from pairflow.models.clip import LoadedClip, ModelLoadError, load_clip
from pairflow.models.formats import INFO_FILE
from pairflow.models.scoring import score_frame
from pairflow.models.scratch import save_untrained_clip
from pairflow.stages.clip_filter.run import FilterOutputs, run_filter

MIN_AUC = 0.9


@pytest.fixture(scope="session")
def reference_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's reference CLIP, pretrained once per test session (default settings)."""
    return pretrain_reference_clip(tmp_path_factory.mktemp("reference-clip") / "clip")


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> GenerateSummary:
    """The demo's data: 600 rows, seed 7, with defects."""
    return generate_dataset(tmp_path_factory.mktemp("demo-data"), 600, seed=7)


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory, demo_data: GenerateSummary) -> Path:
    captions = pd.read_parquet(demo_data.manifest)["caption"].astype(str).tolist()
    return save_untrained_clip(tmp_path_factory.mktemp("tiny-clip") / "clip", captions)


@pytest.fixture(scope="module")
def loaded(tiny_clip: Path) -> LoadedClip:
    return load_clip(str(tiny_clip))


@pytest.mark.slow
def test_reference_clip_separates_mismatched_captions(
    tmp_path: Path, reference_clip: Path, demo_data: GenerateSummary
) -> None:
    info = json.loads((reference_clip / INFO_FILE).read_text())
    assert info["seed"] != 7 and info["epochs"] >= 1
    assert read_reference_info(reference_clip) == info
    assert ensure_reference_clip(reference_clip) == reference_clip  # no retraining
    df = read_source(str(demo_data.manifest), "parquet")
    cfg = ClipFilterConfig(model=str(reference_clip))  # the default threshold, 0.28
    outputs = FilterOutputs.in_dir(tmp_path)
    loaded = load_clip(str(reference_clip))
    result = run_filter(df, cfg, outputs=outputs, ground_truth=demo_data.ground_truth, model=loaded)
    m = result.metrics
    assert m["roc_auc"] >= MIN_AUC, m
    assert m["auc_positives"] == 15 and m["auc_negatives"] == 450
    assert len(result.kept) + len(result.rejected) == len(df)
    truth = pd.read_parquet(demo_data.ground_truth)
    mismatched = set(truth.loc[truth["kind"] == "mismatched_caption", "id"])
    below = result.rejected[result.rejected["reason"] == "clip_score_below_threshold"]
    assert below["id"].isin(mismatched).sum() >= 8  # of 15
    clean = ~below["id"].isin(set(truth["id"]))
    assert clean.sum() <= 0.02 * 450  # clean pairs almost all kept
    # the most confident rows are clean: no mismatched caption in the top 30%
    top = run_filter(df, ClipFilterConfig(top_fraction=0.3), model=loaded)
    assert not set(top.kept["id"]) & mismatched
    assert outputs.summary is not None and "ROC-AUC" in outputs.summary.read_text()


def _upload(directory: Path, bucket: str, prefix: str, s3: S3Config) -> str:
    for f in sorted(directory.iterdir()):
        s3io.upload_file(f, s3io.s3_uri(bucket, f"{prefix}/{f.name}"), s3)
    return s3io.s3_uri(bucket, prefix)


def test_load_from_s3_is_cached_by_content(
    tmp_path: Path,
    tiny_clip: Path,
    loaded: LoadedClip,
    demo_data: GenerateSummary,
    s3_config: S3Config,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    uri = _upload(tiny_clip, s3_bucket, "models/reference-clip", s3_config)
    remote = load_clip(uri, s3_config, cache_dir=tmp_path / "cache")
    assert remote.digest == loaded.digest  # same files, same digest, wherever they came from
    assert remote.path is not None and (tmp_path / "cache") in remote.path.parents
    rows = read_source(str(demo_data.manifest), "parquet").head(40)
    cfg = ClipFilterConfig(num_workers=0)
    np.testing.assert_allclose(
        score_frame(rows, remote, cfg).scores,
        score_frame(rows, loaded, cfg).scores,
        atol=1e-6,
        equal_nan=True,
    )

    def no_download(*args: object, **kwargs: object) -> Path:
        raise AssertionError("cached model downloaded again")

    monkeypatch.setattr(s3io, "download_file", no_download)
    again = load_clip(uri + "/", s3_config, cache_dir=tmp_path / "cache")
    assert again.path == remote.path

    with pytest.raises(ModelLoadError, match="no objects under this S3 prefix"):
        load_clip(s3io.s3_uri(s3_bucket, "models/nothing"), s3_config, cache_dir=tmp_path)
    with pytest.raises(ModelLoadError, match="no such bucket"):
        load_clip("s3://pairflow-no-such-bucket/m", s3_config, cache_dir=tmp_path)


def test_load_from_mlflow_alias(tmp_path: Path, tiny_clip: Path, loaded: LoadedClip) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("clip", artifact_location=(tmp_path / "artifacts").as_uri())
    run = client.create_run(exp)
    # the documented layout: the HF save_pretrained folder under the version's artifacts
    client.log_artifacts(run.info.run_id, str(tiny_clip), "hf")
    client.set_terminated(run.info.run_id)
    client.create_registered_model("pairflow-clip")
    version = client.create_model_version(
        "pairflow-clip", source=f"{run.info.artifact_uri}/hf", run_id=run.info.run_id
    )
    client.set_registered_model_alias("pairflow-clip", "champion", version.version)

    cache = tmp_path / "cache"
    by_alias = load_clip("models:/pairflow-clip@champion", cache_dir=cache, tracking_uri=uri)
    assert by_alias.digest == loaded.digest
    by_version = load_clip(
        f"models:/pairflow-clip/{version.version}", cache_dir=cache, tracking_uri=uri
    )
    assert by_version.path == by_alias.path  # one cached copy per distinct model
    assert len([p for p in (cache / "mlflow").iterdir() if not p.name.startswith(".")]) == 1

    for ref in ("models:/pairflow-clip@no-such-alias", "models:/no-such-model/1"):
        with pytest.raises(ModelLoadError, match="cannot download from MLflow") as err:
            load_clip(ref, cache_dir=cache, tracking_uri=uri)
        assert str(err.value).startswith(ref) and "\n" not in str(err.value)


def test_bad_model_fails_before_any_data_is_read(
    tmp_path: Path, demo_data: GenerateSummary, monkeypatch: pytest.MonkeyPatch
) -> None:
    df = read_source(str(demo_data.manifest), "parquet").head(5)
    read: list[str] = []
    monkeypatch.setattr(
        "pairflow.data.imageio.read_image_bytes", lambda uri, s3=None: read.append(uri)
    )
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text('{"model_type": "clip"}')
    (corrupt / "model.safetensors").write_bytes(b"\0" * 16)
    for ref in (str(corrupt), str(tmp_path / "missing"), "ftp://x/y"):
        with pytest.raises(PairflowError) as err:
            run_filter(df, ClipFilterConfig(model=ref), cache_dir=tmp_path)
        assert isinstance(err.value, model_mod.ModelLoadError)
    assert read == []
