"""Every source layout, local and on a real S3 API server (moto), ingests to the same rows."""

from __future__ import annotations

import io
import json
import re
import shutil
import socket
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from PIL import Image

from pairflow.config import DataConfig, S3Config
from pairflow.data import s3 as s3io
from pairflow.data.export import export_folder, export_manifest, export_webdataset, upload_dir
from pairflow.data.imageio import ImageNotFound, cache_dir, read_image_bytes
from pairflow.data.schema import read_manifest, write_manifest
from pairflow.data.sources import read_source
from pairflow.errors import InputDataError
from pairflow.report import StageOutputs, StageReport
from pairflow.stages.ingest.ingest import run_ingest

# Harmless when tests/conftest.py registers it too (plugins register once by name).
pytest_plugins = ["tests.fixtures_s3"]

N_IMAGES = 12
DUP_ID = "img02"  # a PNG row; the duplicate row repeats this id
GHOST_ID = "ghost"  # manifest row whose image file does not exist
NOIMG_ID = "noimg"  # row with a null image reference
COLOURS = ["red", "green", "blue", "yellow"]


def build_dataset(root: Path) -> Path:
    """12 PNG/JPEG images + manifest.parquet (relative paths) with three defective rows."""
    (root / "images").mkdir(parents=True)
    rows: list[dict[str, Any]] = []
    for i in range(N_IMAGES):
        colour = COLOURS[i % len(COLOURS)]
        fmt, ext = ("PNG", ".png") if i % 2 == 0 else ("JPEG", ".jpg")
        buf = io.BytesIO()
        Image.new("RGB", (24 + i, 24), colour).save(buf, format=fmt)
        (root / "images" / f"img{i:02d}{ext}").write_bytes(buf.getvalue())
        label = str(i % 3) if i % 4 else None
        rows.append(
            {
                "id": f"img{i:02d}",
                "image": f"images/img{i:02d}{ext}",
                "caption": f"a {colour} square, number {i}",
                "label": label,
            }
        )
    rows.append({"id": GHOST_ID, "image": "images/ghost.png", "caption": "never written"})
    rows.append({"id": NOIMG_ID, "image": None, "caption": "caption without image"})
    rows.append({"id": DUP_ID, "image": "images/img05.jpg", "caption": "a repeat", "label": "9"})
    write_manifest(pd.DataFrame(rows), root / "manifest.parquet")
    return root


def expected_rows(root: Path) -> dict[str, tuple[Any, ...]]:
    df = pd.read_parquet(root / "manifest.parquet")
    out: dict[str, tuple[Any, ...]] = {}
    for r in df.to_dict("records"):
        if r["id"] in out or r["id"] in (GHOST_ID, NOIMG_ID):
            continue
        label = None if pd.isna(r["label"]) else r["label"]
        out[r["id"]] = (r["caption"], label, (root / r["image"]).read_bytes())
    return out


def kept_view(
    report: StageReport, out: Path, s3: S3Config | None
) -> tuple[dict[str, tuple[Any, ...]], pd.DataFrame]:
    """Kept rows as {id: (caption, label, image bytes)} (ghost excluded) and the rejects."""
    outputs = StageOutputs.in_dir(out)
    kept = read_manifest(outputs.kept)
    rejected = pd.read_parquet(outputs.rejected)
    assert report.rows_in == report.rows_out + len(rejected)
    assert report.rows_out == len(kept)
    assert rejected["reason"].value_counts().to_dict() == report.rejected
    assert set(rejected["stage"]) == {"ingest"}
    assert StageReport.read(outputs.report) == report
    view: dict[str, tuple[Any, ...]] = {}
    for r in kept.to_dict("records"):
        if r["id"] == GHOST_ID:
            with pytest.raises(ImageNotFound, match="image not found"):
                read_image_bytes(r["image"], s3)
            continue
        view[r["id"]] = (r["caption"], r["label"], read_image_bytes(r["image"], s3))
    return view, rejected


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The dataset written in every local layout."""
    base = tmp_path_factory.mktemp("layouts")
    original = build_dataset(base / "parquet")
    src = read_source(str(original))  # resolved absolute image paths
    export_manifest(src, base / "jsonl", "jsonl")
    export_webdataset(src, base / "wds", rows_per_shard=5)
    # A folder cannot hold two rows with one id: export the unique rows, then add the repeat
    # as a second image with the same stem, as a user's folder would have it.
    export_folder(src[~src.duplicated("id")], base / "folder")
    shutil.copy(base / "parquet" / "images" / "img05.jpg", base / "folder" / f"{DUP_ID}.webp")
    return {
        "parquet": original,
        "jsonl": base / "jsonl",
        "folder": base / "folder",
        "webdataset": base / "wds",
    }


def _check_rejects(fmt: str, rejected: pd.DataFrame, report: StageReport) -> None:
    manifest = fmt in ("parquet", "jsonl")
    assert report.rejected == {
        "duplicate_id": 1,
        # folder/webdataset cannot name a missing file: the ghost row has no image there
        "missing_image_ref": 1 if manifest else 2,
    }
    dup = rejected[rejected["reason"] == "duplicate_id"]
    assert dup["id"].tolist() == [DUP_ID]
    assert DUP_ID in dup["detail"].iloc[0]
    missing = set(rejected.loc[rejected["reason"] == "missing_image_ref", "id"])
    assert missing == ({NOIMG_ID} if manifest else {NOIMG_ID, GHOST_ID})


@pytest.mark.parametrize("fmt", ["parquet", "jsonl", "folder", "webdataset"])
def test_local_layouts_ingest_identically(
    fmt: str, layouts: dict[str, Path], tmp_path: Path
) -> None:
    report = run_ingest(str(layouts[fmt]), StageOutputs.in_dir(tmp_path), DataConfig())
    assert report.metrics["format"] == fmt
    # manifests carry their rows' source on; folder/webdataset rows take the new location
    origin = layouts["parquet"] if fmt in ("parquet", "jsonl") else layouts[fmt]
    assert report.metrics["sources"] == {str(origin): report.rows_in}
    view, rejected = kept_view(report, tmp_path, None)
    assert view == expected_rows(layouts["parquet"])
    _check_rejects(fmt, rejected, report)
    kept = read_manifest(tmp_path / "kept.parquet")
    assert all(str(p).startswith("/") for p in kept["image"])
    if fmt == "webdataset":
        assert all(".tar#" in str(p) for p in kept["image"])


@pytest.mark.parametrize("fmt", ["parquet", "folder", "webdataset"])
def test_s3_layouts_ingest_identically(
    fmt: str, layouts: dict[str, Path], s3_config: S3Config, s3_bucket: str, tmp_path: Path
) -> None:
    local = layouts[fmt]
    prefix = s3io.s3_uri(s3_bucket, f"data/{fmt}")
    upload_dir(local, prefix, s3_config)
    report = run_ingest(prefix, StageOutputs.in_dir(tmp_path), DataConfig(s3=s3_config))
    assert report.metrics["format"] == fmt
    view, rejected = kept_view(report, tmp_path, s3_config)
    assert view == expected_rows(layouts["parquet"])
    _check_rejects(fmt, rejected, report)
    kept = read_manifest(tmp_path / "kept.parquet")
    assert all(str(p).startswith(f"s3://{s3_bucket}/data/{fmt}/") for p in kept["image"])
    if fmt == "webdataset":
        cached = list((cache_dir() / s3_bucket).glob("*-shard-*.tar"))
        assert len(cached) == 3  # 15 rows, 5 per shard: each shard downloaded once


def test_s3_manifest_object_and_jsonl(
    layouts: dict[str, Path], s3_config: S3Config, s3_bucket: str, tmp_path: Path
) -> None:
    upload_dir(layouts["jsonl"], s3io.s3_uri(s3_bucket, "j"), s3_config)
    df = read_source(s3io.s3_uri(s3_bucket, "j/manifest.jsonl"), s3=s3_config)
    assert df.loc[0, "image"] == f"s3://{s3_bucket}/j/images/img00.png"
    assert (
        read_image_bytes(str(df.loc[0, "image"]), s3_config)
        == (layouts["parquet"] / "images" / "img00.png").read_bytes()
    )


def test_s3_errors_name_the_uri(s3_config: S3Config, s3_bucket: str) -> None:
    missing = s3io.s3_uri(s3_bucket, "nope.png")
    with pytest.raises(ImageNotFound, match=re.escape(f"{missing}: image not found")):
        read_image_bytes(missing, s3_config)
    with pytest.raises(ImageNotFound, match=r"s\.tar#k\.png: image not found"):
        read_image_bytes(s3io.s3_uri(s3_bucket, "s.tar#k.png"), s3_config)
    with pytest.raises(InputDataError, match=r"s3://no-such-bucket-pf/data: no such bucket"):
        read_source("s3://no-such-bucket-pf/data", s3=s3_config)
    prefix = s3io.s3_uri(s3_bucket, "empty")
    with pytest.raises(InputDataError, match=re.escape(f"{prefix}: data source not found")):
        read_source(prefix, s3=s3_config)
    manifest = s3io.s3_uri(s3_bucket, "m.parquet")
    with pytest.raises(InputDataError, match=re.escape(f"{manifest}: manifest not found")):
        read_source(manifest, s3=s3_config)
    s3io.put_bytes(manifest, b"not parquet", s3_config)
    with pytest.raises(InputDataError, match=re.escape(f"{manifest}: unreadable Parquet manifest")):
        read_source(manifest, s3=s3_config)


def test_unreachable_endpoint(moto_server: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cfg = S3Config(endpoint_url=f"http://127.0.0.1:{port}")
    with pytest.raises(InputDataError, match=r"s3://b/k\.png: cannot reach S3 endpoint"):
        read_image_bytes("s3://b/k.png", cfg)


def test_aws_endpoint_url_env_is_honoured(
    s3_config: S3Config, s3_bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = s3io.put_bytes(s3io.s3_uri(s3_bucket, "x/a.txt"), b"hello", s3_config)
    monkeypatch.setenv("AWS_ENDPOINT_URL", str(s3_config.endpoint_url))
    assert s3io.get_bytes(uri, S3Config()) == b"hello"
    assert s3io.list_keys(s3io.s3_uri(s3_bucket, "x"), S3Config()) == ["x/a.txt"]


def test_non_utf8_caption_is_rejected_with_reason(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "good.png").write_bytes(b"png")
    (src / "good.txt").write_text("fine")
    (src / "bad.png").write_bytes(b"png")
    (src / "bad.txt").write_bytes(b"\xff\xfe\x00")
    report = run_ingest(str(src), StageOutputs.in_dir(tmp_path / "out"), DataConfig())
    assert report.rejected == {"caption_not_utf8": 1}
    rejected = pd.read_parquet(tmp_path / "out" / "rejected.parquet")
    assert rejected["id"].tolist() == ["bad"]
    assert "bad.txt: not UTF-8" in rejected["detail"].iloc[0]
    assert "read_problem" not in pd.read_parquet(tmp_path / "out" / "kept.parquet").columns


def test_path_traversal_in_relative_image_uri_is_rejected(tmp_path: Path) -> None:
    """``../../etc/passwd`` in a manifest is refused at ingest, never resolved and read."""
    root = tmp_path / "data"
    root.mkdir()
    (root / "ok.png").write_bytes(b"png")
    manifest = root / "manifest.jsonl"
    rows = [
        {"id": "ok", "image": "ok.png", "caption": "fine"},
        {"id": "evil", "image": "../../etc/passwd", "caption": "nope"},
        {"id": "evil-tar", "image": "../x.tar#a.jpg", "caption": "nope"},
        {"id": "inside", "image": "sub/../ok.png", "caption": "fine"},
    ]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = run_ingest(str(manifest), StageOutputs.in_dir(tmp_path / "out"), DataConfig())
    assert report.rejected == {"unsafe_image_path": 2}
    rejected = pd.read_parquet(tmp_path / "out" / "rejected.parquet")
    assert sorted(rejected["id"]) == ["evil", "evil-tar"]
    assert "escapes the manifest directory" in rejected["detail"].iloc[0]
    kept = pd.read_parquet(tmp_path / "out" / "kept.parquet")
    assert sorted(kept["id"]) == ["inside", "ok"]
