"""The triggered retrain's data: logged window (+ the champion's training snapshot found
through a real MLflow server) written as a manifest that ingest reads, locally and on S3."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pairflow.config import S3Config
from pairflow.data import s3 as s3io
from pairflow.data.schema import write_manifest
from pairflow.data.sources import load_source
from pairflow.serve.requestlog.records import to_table
from pairflow.stages.monitor.snapshot import (
    SnapshotError,
    build_snapshot,
    read_snapshot_manifest,
    remote_uri,
    training_manifest_uri,
    window_slug,
)
from pairflow.stages.monitor.verdict import WindowId

WINDOW = WindowId("2026-12-05T12:00:00+00:00", "2026-12-06T12:00:00+00:00", "clip", "3")
TS = datetime(2026, 12, 6, 1, tzinfo=UTC)


def _record(i: int, image_uri: str, caption: str | None, sha: str) -> dict[str, Any]:
    return {
        "request_id": f"r{i}",
        "instance": 0,
        "ts": TS,
        "model_name": "clip",
        "model_version": "3",
        "task": "score",
        "image_sha256": sha,
        "image_uri": image_uri,
        "caption": caption,
        "score": 0.3,
        "label": "circle",  # predicted: must not become a training label
        "image_emb": [0.5, 0.5, 0.5, 0.5],
        "text_emb": [0.5, 0.5, 0.5, 0.5],
    }


def _images(folder: Path, n: int) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        p = folder / f"{i:064x}.png"
        Image.new("RGB", (32, 32), (40 * i % 255, 90, 200)).save(p)
        out.append(p)
    return out


def _window_records(images: list[str]) -> Any:
    rows = [_record(i, uri, f"a pink star number {i}", f"sha{i}") for i, uri in enumerate(images)]
    rows.append(_record(90, "", "a teal circle", "sha90"))  # image not stored
    rows.append(_record(91, images[0], "  ", "sha0"))  # no caption
    rows.append(_record(92, images[1], "a pink star number 1", "sha1"))  # repeated request
    return to_table(rows, dim=4)


def _previous(tmp_path: Path) -> Path:
    imgs = _images(tmp_path / "prev-images", 3)
    frame = pd.DataFrame(
        {
            "id": ["p0", "p1", "served-r0-0"],  # the last clashes with a window row's id
            "image": [str(p) for p in imgs],
            "caption": ["a red circle", "two blue squares", "a green star"],
            "label": ["circle", "square", "star"],
            "source": ["drop-2", "drop-2", "drop-2"],
            "clip_score": [0.4, 0.5, 0.3],  # curated manifests carry more columns
        }
    )
    return write_manifest(frame, tmp_path / "curated" / "kept")  # a KFP artifact: no suffix


def test_window_plus_previous_found_through_the_champion_run(
    mlflow_server: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from pairflow.data.split import split_holdout
    from pairflow.registry.client import Registry
    from pairflow.stages.register import lineage

    prev = _previous(tmp_path)
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.create_experiment(f"snap-{tmp_path.name}")
    run_id = client.create_run(exp).info.run_id
    frame = pd.read_parquet(prev)
    train, hold = split_holdout(frame, 0.2)
    reg = Registry(mlflow_server)
    lineage.log_datasets(reg, run_id, {"training": (train, "train"), "evaluation": (hold, "h")},
                         source=str(prev))  # fmt: skip
    found = training_manifest_uri(mlflow_server, run_id, "models:/clip/3")
    assert found == str(prev)

    images = [str(p) for p in _images(tmp_path / "log" / "images", 4)]
    snap = build_snapshot(
        _window_records(images),
        WINDOW,
        log_prefix=str(tmp_path / "log"),
        retrain_data="window+previous",
        previous_uri=found,
    )
    assert snap.uri == str(tmp_path / "log" / "retrain" / window_slug(WINDOW) / "manifest.parquet")
    assert window_slug(WINDOW) == "clip-v3-20261205T120000Z-20261206T120000Z"
    assert (snap.window_rows_in, snap.window_rows_out) == (7, 4)
    assert (snap.previous_rows_in, snap.previous_rows_out) == (3, 2)
    assert snap.rejected == {"id_in_window": 1, "image_not_stored": 1, "no_caption": 1,
                             "repeated_pair": 1}  # fmt: skip
    assert (
        snap.rows == 6 == snap.window_rows_in + snap.previous_rows_in - sum(snap.rejected.values())
    )
    got = read_snapshot_manifest(snap.uri)
    assert list(got["id"]) == ["served-r0-0", "served-r1-0", "served-r2-0", "served-r3-0",
                               "p0", "p1"]  # fmt: skip
    served = got[got["source"] == "served"]
    assert served["label"].isna().all()  # the predicted label is not ground truth
    assert list(got[got["source"] == "drop-2"]["label"]) == ["circle", "square"]
    rejected = read_snapshot_manifest(snap.rejected_uri)
    assert set(rejected["reason"]) == set(snap.rejected)
    repeat = rejected[rejected["reason"] == "repeated_pair"].iloc[0]
    assert repeat["detail"] == "same image and caption as served-r1-0"
    # what the triggered run's ingest reads: every image resolves to an existing file
    ingested, fmt = load_source(snap.uri)
    assert fmt == "parquet" and len(ingested) == 6
    assert all(Path(p).is_file() for p in ingested["image"])


def test_window_only_on_s3(s3_config: S3Config, s3_bucket: str, tmp_path: Path) -> None:
    images = []
    for i, p in enumerate(_images(tmp_path / "imgs", 4)):
        images.append(s3io.upload_file(p, f"s3://{s3_bucket}/log/images/{i}.png", s3_config))
    snap = build_snapshot(
        _window_records(images),
        WINDOW,
        log_prefix=f"s3://{s3_bucket}/log/",
        retrain_data="window",
        s3=s3_config,
    )
    assert snap.uri == f"s3://{s3_bucket}/log/retrain/{window_slug(WINDOW)}/manifest.parquet"
    assert snap.previous_rows_in == 0 and snap.rows == 4
    frame, _ = load_source(snap.uri, "auto", s3_config)
    assert sorted(frame["image"]) == sorted(images)
    report = s3io.get_bytes(snap.report_uri, s3_config)
    assert b'"rows_in": 7' in report and b'"rows_out": 4' in report


def test_errors_name_the_input(mlflow_server: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    run_id = client.create_run(client.create_experiment(f"bare-{tmp_path.name}")).info.run_id
    with pytest.raises(SnapshotError, match=f"models:/clip/3: run {run_id} records no training"):
        training_manifest_uri(mlflow_server, run_id, "models:/clip/3")
    records = _window_records([str(p) for p in _images(tmp_path / "i", 2)])
    with pytest.raises(SnapshotError, match="no previous training snapshot"):
        build_snapshot(records, WINDOW, log_prefix=str(tmp_path), retrain_data="window+previous")
    with pytest.raises(SnapshotError, match="log_prefix: empty"):
        build_snapshot(records, WINDOW, log_prefix="", retrain_data="window")
    with pytest.raises(SnapshotError, match=r"training snapshot: .*not found"):
        build_snapshot(records, WINDOW, log_prefix=str(tmp_path), retrain_data="window+previous",
                       previous_uri=str(tmp_path / "gone.parquet"))  # fmt: skip
    nothing = to_table([_record(1, "", "a caption", "s")], dim=4)
    with pytest.raises(SnapshotError, match=r"no usable rows .*image_not_stored"):
        build_snapshot(nothing, WINDOW, log_prefix=str(tmp_path), retrain_data="window")


def test_kfp_pod_mount_paths_map_back_to_s3() -> None:
    assert remote_uri("/s3/bucket/v2/artifacts/kept") == "s3://bucket/v2/artifacts/kept"
    assert remote_uri("/minio/mlpipeline/v2/x/kept") == "s3://mlpipeline/v2/x/kept"
    assert remote_uri("/data/runs/kept") == "/data/runs/kept"
    with pytest.raises(SnapshotError, match="GCS"):
        remote_uri("/gcs/b/kept")
