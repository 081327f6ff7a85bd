"""Write a manifest as any supported source layout, and upload a layout to S3.

Layouts (each reads back through :func:`pairflow.data.sources.read_source`):

- ``folder``: ``<out>/<id><ext>`` image, ``<id>.txt`` caption, ``<id>.cls`` label;
- ``parquet`` / ``jsonl``: ``<out>/manifest.<ext>`` with image paths relative to ``<out>``,
  images copied to ``<out>/images/<id><ext>``;
- ``webdataset``: ``<out>/shard-000000.tar``... with ``rows_per_shard`` rows each, members
  ``<id>.<ext>``, ``<id>.txt``, ``<id>.cls``, sorted by (id, extension), with deterministic
  headers (mtime 0, uid/gid 0, mode 0644), so the same rows give the same bytes.

Images are read with :func:`~pairflow.data.imageio.read_image_bytes` (any resolved URI).
A row whose image is missing keeps its image reference in manifest layouts (the file is just
absent); in folder and WebDataset layouts only its ``.txt``/``.cls`` are written, so it reads
back with image None. A row with no image, caption or label cannot be represented there and
is skipped. Ids must be relative paths without ``..``; WebDataset ids need a dot-free basename.
A folder layout cannot hold two rows with one id (error); WebDataset puts a repeat in a new shard.
"""

from __future__ import annotations

import io
import json
import posixpath
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from pairflow.config import S3Config
from pairflow.data import s3 as s3io
from pairflow.data.imageio import (
    IMAGE_EXTENSIONS,
    ImageNotFound,
    read_image_bytes,
    split_tar_member,
)
from pairflow.data.schema import MANIFEST_COLUMNS, write_manifest
from pairflow.errors import InputDataError

ExportFormat = Literal["folder", "parquet", "jsonl", "webdataset"]

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", ".png"),
    (b"\xff\xd8\xff", ".jpg"),
    (b"GIF8", ".gif"),
    (b"BM", ".bmp"),
)


def _check_id(row_id: Any, dot_free: bool = False) -> str:
    rid = "" if row_id is None else str(row_id)
    parts = rid.split("/")
    if (
        not rid.strip()
        or rid.startswith("/")
        or "\\" in rid
        or any(p in ("", ".", "..") for p in parts)
    ):
        raise InputDataError(f"id {rid!r}: cannot be used as a file name (need a relative path)")
    if dot_free and "." in parts[-1]:
        raise InputDataError(f"id {rid!r}: WebDataset keys cannot contain '.' in the file name")
    return rid


def image_extension(uri: str, data: bytes) -> str:
    """The file extension for an image: from its name when known, else sniffed from bytes."""
    tar = split_tar_member(uri)
    name = tar[1] if tar else uri
    ext = posixpath.splitext(name)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return ext
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    for magic, sniffed in _MAGIC:
        if data.startswith(magic):
            return sniffed
    return ext or ".jpg"


def _load_image(uri: Any, s3: S3Config | None) -> tuple[bytes, str] | None:
    """(bytes, extension) of a row's image, or None when it has none or it is missing."""
    if uri is None or not str(uri).strip():
        return None
    try:
        data = read_image_bytes(str(uri), s3)
    except ImageNotFound:
        return None
    return data, image_extension(str(uri), data)


def _text(value: Any) -> str | None:
    return None if value is None or (isinstance(value, float) and value != value) else str(value)


def export_folder(df: pd.DataFrame, out: str | Path, s3: S3Config | None = None) -> Path:
    """Write ``df`` as a folder of ``<id><ext>`` images with ``.txt``/``.cls`` sidecars."""
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    for row in df.to_dict("records"):
        rid = _check_id(row.get("id"))
        if rid in seen:
            raise InputDataError(f"id {rid!r}: repeated; a folder layout needs unique ids")
        seen.add(rid)
        base = root / rid
        base.parent.mkdir(parents=True, exist_ok=True)
        image = _load_image(row.get("image"), s3)
        if image is not None:
            base.with_name(base.name + image[1]).write_bytes(image[0])
        for ext, col in ((".txt", "caption"), (".cls", "label")):
            text = _text(row.get(col))
            if text is not None:
                base.with_name(base.name + ext).write_text(text, encoding="utf-8")
    return root


def export_manifest(
    df: pd.DataFrame,
    out: str | Path,
    fmt: Literal["parquet", "jsonl"] = "parquet",
    s3: S3Config | None = None,
) -> Path:
    """Copy images to ``<out>/images/`` and write ``<out>/manifest.<fmt>`` with relative paths.

    Returns the manifest path. Rows whose image is missing keep a relative reference to where
    the file would be; rows without an image reference keep None. A repeated id gets its own
    file name (``<id>~1<ext>``) so the rows stay distinct.
    """
    root = Path(out)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    used: set[str] = set()
    for row in df.to_dict("records"):
        rid = _check_id(row.get("id"))
        rel: str | None = None
        uri = row.get("image")
        if uri is not None and str(uri).strip():
            image = _load_image(uri, s3)
            ext = image[1] if image else image_extension(str(uri), b"")
            rel = f"images/{rid}{ext}"
            n = 1
            while rel in used:  # a repeated id must not overwrite the first row's image
                rel, n = f"images/{rid}~{n}{ext}", n + 1
            used.add(rel)
            if image is not None:
                dest = root / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(image[0])
        rows.append({**{c: _text(row.get(c)) for c in MANIFEST_COLUMNS}, "id": rid, "image": rel})
    if fmt == "jsonl":
        path = root / "manifest.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        return path
    return write_manifest(
        pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS)), root / "manifest.parquet"
    )


def _tar_add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tf.addfile(info, io.BytesIO(data))


def export_webdataset(
    df: pd.DataFrame, out: str | Path, rows_per_shard: int = 1000, s3: S3Config | None = None
) -> list[Path]:
    """Write ``df`` as WebDataset shards ``<out>/shard-NNNNNN.tar``; returns the shard paths.

    A shard holds up to ``rows_per_shard`` rows; an id repeated within a shard starts a new
    shard, so both rows survive (ingest then rejects the second as ``duplicate_id``).
    """
    if rows_per_shard < 1:
        raise InputDataError(f"rows_per_shard={rows_per_shard}: must be >= 1")
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    groups: list[list[dict[Any, Any]]] = [[]]
    ids: set[str] = set()
    for row in df.to_dict("records"):
        rid = _check_id(row.get("id"), dot_free=True)
        if len(groups[-1]) >= rows_per_shard or rid in ids:
            groups.append([])
            ids = set()
        groups[-1].append(row)
        ids.add(rid)
    shards: list[Path] = []
    for n, rows in enumerate(g for g in groups if g):
        members: list[tuple[str, str, bytes]] = []
        for row in rows:
            rid = str(row["id"])
            image = _load_image(row.get("image"), s3)
            if image is not None:
                members.append((rid, image[1].lstrip("."), image[0]))
            for ext, col in (("txt", "caption"), ("cls", "label")):
                text = _text(row.get(col))
                if text is not None:
                    members.append((rid, ext, text.encode("utf-8")))
        path = root / f"shard-{n:06d}.tar"
        tmp = path.with_name(path.name + ".part")
        with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
            for rid, ext, data in sorted(members, key=lambda m: (m[0], m[1])):
                _tar_add(tf, f"{rid}.{ext}", data)
        tmp.replace(path)
        shards.append(path)
    return shards


def export_as(
    df: pd.DataFrame,
    fmt: ExportFormat,
    out: str | Path,
    rows_per_shard: int = 1000,
    s3: S3Config | None = None,
) -> Path:
    """Write ``df`` in layout ``fmt`` under ``out``; returns what to pass to ``read_source``."""
    if fmt == "folder":
        return export_folder(df, out, s3)
    if fmt in ("parquet", "jsonl"):
        return export_manifest(df, out, fmt, s3)
    if fmt == "webdataset":
        export_webdataset(df, out, rows_per_shard, s3)
        return Path(out)
    raise InputDataError(f"export format {fmt!r}: expected folder, parquet, jsonl or webdataset")


def upload_dir(local_dir: str | Path, uri: str, s3: S3Config | None = None) -> list[str]:
    """Upload every file under ``local_dir`` to the prefix ``uri``; returns the object URIs."""
    root = Path(local_dir)
    if not root.is_dir():
        raise InputDataError(f"{root}: not a directory")
    bucket, prefix = s3io.parse_s3_uri(uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    targets = [s3io.s3_uri(bucket, prefix + p.relative_to(root).as_posix()) for p in files]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(lambda f, t: s3io.upload_file(f, t, s3), files, targets))
