"""Local source readers: folder, Parquet/JSONL manifests, WebDataset tars, auto detection."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import pandas as pd
import pytest
from botocore.exceptions import ClientError
from PIL import Image

from pairflow.data import imageio
from pairflow.data.export import export_webdataset
from pairflow.data.imageio import ImageNotFound, read_image_bytes, split_tar_member
from pairflow.data.s3 import S3NotFound, parse_s3_uri, translate_error
from pairflow.data.schema import write_manifest
from pairflow.data.sources import PROBLEM_COLUMN, load_source, read_source, resolve_image_uri
from pairflow.errors import InputDataError


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 24) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def make_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    root = tmp_path / "pairs"
    (root / "sub").mkdir(parents=True)
    (root / "a.png").write_bytes(png_bytes((1, 2, 3)))
    (root / "a.txt").write_text("a red square\n", encoding="utf-8")
    (root / "a.cls").write_text("3\n")
    (root / "sub" / "b.JPG").write_bytes(png_bytes((4, 5, 6)))
    (root / "sub" / "b.txt").write_text("ünïcode caption", encoding="utf-8")
    (root / "c.webp").write_bytes(png_bytes())  # no caption sidecar
    (root / "orphan.txt").write_text("caption without image")
    (root / "notes.md").write_text("ignored")
    return root


# ---------------------------------------------------------------------------------------------
# folder


def test_folder_rows_ids_and_sidecars(folder: Path) -> None:
    df, fmt = load_source(str(folder))
    assert fmt == "folder"
    assert df["id"].tolist() == ["a", "c", "orphan", "sub/b"]
    rows = df.set_index("id")
    assert rows.loc["a", "image"] == str(folder / "a.png")
    assert rows.loc["a", "caption"] == "a red square"
    assert rows.loc["a", "label"] == "3"
    assert rows.loc["sub/b", "image"] == str(folder / "sub" / "b.JPG")
    assert rows.loc["sub/b", "caption"] == "ünïcode caption"
    assert rows.loc["c", "caption"] is None
    assert rows.loc["orphan", "image"] is None
    assert set(df["source"]) == {str(folder)}
    assert df[PROBLEM_COLUMN].isna().all()


def test_folder_bad_utf8_caption_is_a_row_problem(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(png_bytes())
    (tmp_path / "x.txt").write_bytes(b"\xff\xfe caption")
    df = read_source(str(tmp_path), "folder")
    assert len(df) == 1
    assert df.loc[0, "caption"] is None
    assert "not UTF-8" in str(df.loc[0, PROBLEM_COLUMN])


def test_folder_two_images_one_stem_gives_two_rows(tmp_path: Path) -> None:
    (tmp_path / "x.png").write_bytes(png_bytes())
    (tmp_path / "x.jpg").write_bytes(png_bytes())
    df = read_source(str(tmp_path))
    assert df["id"].tolist() == ["x", "x"]


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "readme.md").write_text("nothing here")
    with pytest.raises(InputDataError, match=r"no image .* found \(empty folder"):
        read_source(str(tmp_path))


# ---------------------------------------------------------------------------------------------
# manifests


def _manifest_rows(tmp_path: Path) -> pd.DataFrame:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "r.png").write_bytes(png_bytes())
    make_tar(tmp_path / "shard.tar", {"k.png": png_bytes(), "k.txt": b"in a tar"})
    return pd.DataFrame(
        {
            "id": ["rel", "abs", "s3", "tar", "none", "blank"],
            "image": [
                "images/r.png",
                "/data/x.png",
                "s3://bucket/y.png",
                "shard.tar#k.png",
                None,
                "  ",
            ],
            "caption": ["r", "a", "s", "t", "n", "b"],
            "extra": [1, 2, 3, 4, 5, 6],
        }
    )


def test_parquet_manifest_resolves_relative_paths(tmp_path: Path) -> None:
    write_manifest(_manifest_rows(tmp_path), tmp_path / "m.parquet")
    df, fmt = load_source(str(tmp_path / "m.parquet"))
    assert fmt == "parquet"
    assert df["image"].tolist() == [
        str(tmp_path / "images" / "r.png"),
        "/data/x.png",
        "s3://bucket/y.png",
        f"{tmp_path / 'shard.tar'}#k.png",
        None,
        None,
    ]
    assert df["extra"].tolist() == [1, 2, 3, 4, 5, 6]
    assert read_image_bytes(str(df.loc[3, "image"])) == png_bytes()
    assert df["source"].tolist() == [str(tmp_path / "m.parquet")] * 6


def test_jsonl_manifest_same_as_parquet(tmp_path: Path) -> None:
    rows = _manifest_rows(tmp_path)
    write_manifest(rows, tmp_path / "m.parquet")
    with (tmp_path / "m.jsonl").open("w") as fh:
        for rec in rows.to_dict("records"):
            fh.write(json.dumps(rec) + "\n")
    a = read_source(str(tmp_path / "m.parquet"))
    b, fmt = load_source(str(tmp_path / "m.jsonl"))
    assert fmt == "jsonl"
    cols = ["id", "image", "caption", "label"]
    assert a[cols].equals(b[cols])


def test_manifest_keeps_given_source_column(tmp_path: Path) -> None:
    (tmp_path / "manifest.jsonl").write_text(
        json.dumps({"id": "1", "image": "a.png", "caption": "c", "source": "camera-7"})
        + "\n"
        + json.dumps({"id": "2", "image": "b.png", "caption": "c"})
        + "\n"
    )
    df = read_source(str(tmp_path))
    assert df["source"].tolist() == ["camera-7", str(tmp_path)]


def test_manifest_missing_columns(tmp_path: Path) -> None:
    write_manifest(pd.DataFrame({"id": ["1"], "path": ["a.png"]}), tmp_path / "m.parquet")
    with pytest.raises(InputDataError, match=r"m\.parquet: missing required column\(s\) image"):
        read_source(str(tmp_path / "m.parquet"))


def test_manifest_unreadable(tmp_path: Path) -> None:
    (tmp_path / "m.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(InputDataError, match=r"m\.parquet: unreadable Parquet manifest"):
        read_source(str(tmp_path / "m.parquet"))
    (tmp_path / "m.jsonl").write_text("{not json\n")
    with pytest.raises(InputDataError, match=r"m\.jsonl: unreadable JSONL manifest"):
        read_source(str(tmp_path / "m.jsonl"))


def test_manifest_explicit_format_ignores_suffix(tmp_path: Path) -> None:
    (tmp_path / "data.txt").write_text(json.dumps({"id": "1", "image": "a.png", "caption": "c"}))
    df = read_source(str(tmp_path / "data.txt"), "jsonl")
    assert df["image"].tolist() == [str(tmp_path / "a.png")]
    with pytest.raises(InputDataError, match=r"data\.txt: unreadable Parquet manifest"):
        read_source(str(tmp_path / "data.txt"), "parquet")


def test_manifest_without_rows(tmp_path: Path) -> None:
    empty = pd.DataFrame({c: pd.Series([], dtype=object) for c in ("id", "image", "caption")})
    write_manifest(empty, tmp_path / "m.parquet")
    with pytest.raises(InputDataError, match=r"m\.parquet: manifest has no rows"):
        read_source(str(tmp_path / "m.parquet"))
    (tmp_path / "m.jsonl").write_text("")
    with pytest.raises(InputDataError, match=r"m\.jsonl: missing required column"):
        read_source(str(tmp_path / "m.jsonl"))


def test_resolve_image_uri() -> None:
    assert resolve_image_uri("a/b.png", "/d") == "/d/a/b.png"
    assert resolve_image_uri("../x.png", "/d/m") == "/d/x.png"
    assert resolve_image_uri("file:///abs/x.png", "/d") == "/abs/x.png"
    assert resolve_image_uri("a/b.png", "s3://bkt/pre/") == "s3://bkt/pre/a/b.png"
    assert resolve_image_uri("a/b.png", "s3://bkt/") == "s3://bkt/a/b.png"
    assert resolve_image_uri("s.tar#k.png", "s3://bkt/p/") == "s3://bkt/p/s.tar#k.png"
    assert resolve_image_uri("s3://o/k.png", "/d") == "s3://o/k.png"
    assert resolve_image_uri("", "/d") is None


# ---------------------------------------------------------------------------------------------
# webdataset and tar members


def test_webdataset_keys_and_members(tmp_path: Path) -> None:
    shards = tmp_path / "wds"
    shards.mkdir()
    make_tar(
        shards / "000.tar",
        {
            "k1.jpg": png_bytes((9, 9, 9)),
            "k1.txt": b"first\n",
            "k1.cls": b"7",
            "dir/k2.seg.png": png_bytes((1, 1, 1)),
            "dir/k2.png": png_bytes((2, 2, 2)),
            "dir/k2.txt": b"second",
            "k3.txt": b"no image",
        },
    )
    make_tar(shards / "001.tar", {"k4.webp": png_bytes()})
    df, fmt = load_source(str(shards))
    assert fmt == "webdataset"
    assert df["id"].tolist() == ["dir/k2", "k1", "k3", "k4"]
    rows = df.set_index("id")
    assert rows.loc["dir/k2", "image"] == f"{shards / '000.tar'}#dir/k2.png"
    assert read_image_bytes(str(rows.loc["dir/k2", "image"])) == png_bytes((2, 2, 2))
    assert rows.loc["k1", "caption"] == "first"
    assert rows.loc["k1", "label"] == "7"
    assert rows.loc["k3", "image"] is None
    assert rows.loc["k4", "caption"] is None
    single = read_source(str(shards / "001.tar"))
    assert single["id"].tolist() == ["k4"]


def test_tar_index_is_cached_and_reads_seek(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "s.tar", {f"k{i}.png": png_bytes((i, i, i)) for i in range(5)})
    imageio.clear_caches()
    for i in range(5):
        assert read_image_bytes(f"{tar}#k{i}.png") == png_bytes((i, i, i))
    info = imageio._tar_index_cached.cache_info()
    assert info.misses == 1
    assert info.hits >= 4


def test_read_image_bytes_errors(tmp_path: Path) -> None:
    tar = make_tar(tmp_path / "s.tar", {"k.png": png_bytes()})
    with pytest.raises(ImageNotFound, match=r"missing\.png: image not found"):
        read_image_bytes(str(tmp_path / "missing.png"))
    with pytest.raises(ImageNotFound, match=r"s\.tar#nope\.png: image not found"):
        read_image_bytes(f"{tar}#nope.png")
    with pytest.raises(ImageNotFound, match=r"gone\.tar#k\.png: image not found"):
        read_image_bytes(f"{tmp_path / 'gone.tar'}#k.png")
    (tmp_path / "bad.tar").write_bytes(b"garbage" * 100)
    with pytest.raises(InputDataError, match=r"bad\.tar: not a readable tar shard"):
        read_image_bytes(f"{tmp_path / 'bad.tar'}#k.png")
    with pytest.raises(InputDataError, match="relative"):
        read_image_bytes("images/x.png")
    with pytest.raises(InputDataError, match="unsupported image URI scheme"):
        read_image_bytes("http://example.com/x.png")
    assert read_image_bytes(f"file://{tar}#k.png") == png_bytes()


def test_split_tar_member_allows_hash_in_paths() -> None:
    assert split_tar_member("/a#b/s.tar#k.png") == ("/a#b/s.tar", "k.png")
    assert split_tar_member("/a#b/x.png") is None
    assert split_tar_member("s3://b/s.TAR#d/k.jpg") == ("s3://b/s.TAR", "d/k.jpg")


def test_export_webdataset_is_deterministic(tmp_path: Path) -> None:
    img = tmp_path / "x.png"
    img.write_bytes(png_bytes())
    df = pd.DataFrame(
        {"id": ["b", "a", "a"], "image": [str(img)] * 3, "caption": ["B", "A", "A2"], "label": None}
    )
    one = export_webdataset(df, tmp_path / "one", rows_per_shard=10)
    two = export_webdataset(df, tmp_path / "two", rows_per_shard=10)
    assert [p.name for p in one] == ["shard-000000.tar", "shard-000001.tar"]  # repeat → new shard
    assert [p.read_bytes() for p in one] == [p.read_bytes() for p in two]
    with tarfile.open(one[0]) as tf:
        assert tf.getnames() == ["a.png", "a.txt", "b.png", "b.txt"]
        assert {(m.mtime, m.uid, m.gid) for m in tf.getmembers()} == {(0, 0, 0)}


# ---------------------------------------------------------------------------------------------
# detection and source errors


def test_auto_detection(tmp_path: Path, folder: Path) -> None:
    assert load_source(str(folder))[1] == "folder"
    d = tmp_path / "with_manifest"
    d.mkdir()
    write_manifest(
        pd.DataFrame({"id": ["1"], "image": ["a.png"], "caption": ["c"]}), d / "manifest.parquet"
    )
    (d / "manifest.jsonl").write_text("")
    assert load_source(str(d))[1] == "parquet"
    (d / "manifest.parquet").unlink()
    (d / "manifest.jsonl").write_text(json.dumps({"id": "1", "image": "a.png", "caption": "c"}))
    assert load_source(str(d))[1] == "jsonl"
    w = tmp_path / "tars"
    (w / "nested").mkdir(parents=True)
    make_tar(w / "nested" / "s.tar", {"k.png": png_bytes()})
    assert load_source(str(w))[1] == "webdataset"
    assert load_source(str(folder), "folder")[1] == "folder"


def test_source_errors(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match=r"nowhere: data source not found"):
        read_source(str(tmp_path / "nowhere"))
    (tmp_path / "data.csv").write_text("id,image\n")
    with pytest.raises(InputDataError, match=r"data\.csv: unknown source format"):
        read_source(str(tmp_path / "data.csv"))
    with pytest.raises(InputDataError, match=r"format 'folder' needs a directory"):
        read_source(str(tmp_path / "data.csv"), "folder")
    with pytest.raises(InputDataError, match=r"no manifest\.parquet in this directory"):
        read_source(str(tmp_path), "parquet")
    with pytest.raises(InputDataError, match=r"no \.tar shards found"):
        read_source(str(tmp_path), "webdataset")
    with pytest.raises(InputDataError, match="data source is empty"):
        read_source("  ")
    with pytest.raises(InputDataError, match="unknown format 'csv'"):
        read_source(str(tmp_path), "csv")  # type: ignore[arg-type]
    with pytest.raises(InputDataError, match="unsupported URI scheme"):
        read_source("gs://bucket/data")


def test_relative_source_is_made_absolute(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder.parent)
    df = read_source(folder.name)
    assert all(os.path.isabs(p) for p in df["image"].dropna())


# ---------------------------------------------------------------------------------------------
# S3 URIs and error mapping (no server needed)


def test_parse_s3_uri() -> None:
    assert parse_s3_uri("s3://b/k/x.png") == ("b", "k/x.png")
    assert parse_s3_uri("s3://b") == ("b", "")
    with pytest.raises(InputDataError, match="not an s3:// URI"):
        parse_s3_uri("/local")
    with pytest.raises(InputDataError, match="no bucket"):
        parse_s3_uri("s3:///k")


@pytest.mark.parametrize(
    ("code", "kind", "text"),
    [
        ("NoSuchKey", S3NotFound, "no such key"),
        ("NoSuchBucket", S3NotFound, "no such bucket"),
        ("404", S3NotFound, "not found"),
        ("AccessDenied", InputDataError, "access denied"),
        ("SlowDown", InputDataError, "S3 error SlowDown"),
    ],
)
def test_translate_client_errors(code: str, kind: type[Exception], text: str) -> None:
    exc = ClientError({"Error": {"Code": code, "Message": "m"}}, "GetObject")
    err = translate_error(exc, "s3://b/k")
    assert isinstance(err, kind)
    assert str(err).startswith("s3://b/k: ")
    assert text in str(err)


def test_folder_symlink_cycle_is_listed_once(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "x.png").write_bytes(png_bytes())
    (tmp_path / "d" / "loop").symlink_to(tmp_path / "d")
    assert read_source(str(tmp_path / "d"))["id"].tolist() == ["x"]
