"""Read a raw data source into a manifest DataFrame with every image URI resolved.

Sources (local or ``s3://``): a Parquet/JSONL manifest, a folder of images with ``<stem>.txt``
captions (and optional ``<stem>.cls`` labels), or WebDataset ``.tar`` shards. The result has
the manifest columns ``id, image, caption, label, source`` (plus any extra manifest columns and
:data:`PROBLEM_COLUMN`), where ``image`` is an absolute local path, an ``s3://`` URI or a tar
member URI ``<abs tar path | s3 tar uri>#<member>`` (see :mod:`pairflow.data.imageio`).

Nothing is dropped here: rows without an image, duplicate ids or unreadable sidecars are kept
(the latter with a message in :data:`PROBLEM_COLUMN`) so ingest can reject them with a reason.
Sidecar text is read as UTF-8 with surrounding whitespace stripped. A null ``source`` is
filled with the source location as given (made absolute for local paths).
"""

from __future__ import annotations

import os
import posixpath
import tempfile
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import pandas as pd

from pairflow.config import S3Config
from pairflow.data import s3 as s3io
from pairflow.data.imageio import (
    IMAGE_EXTENSIONS,
    local_tar,
    read_tar_member,
    split_tar_member,
    tar_index,
    tar_member_uri,
)
from pairflow.data.schema import MANIFEST_COLUMNS, read_manifest
from pairflow.errors import InputDataError

SourceFormat = Literal["auto", "folder", "parquet", "jsonl", "webdataset"]
ResolvedFormat = Literal["folder", "parquet", "jsonl", "webdataset"]

FORMATS: tuple[str, ...] = get_args(SourceFormat)
JSONL_EXTENSIONS = frozenset({".jsonl", ".json", ".ndjson"})
PARQUET_EXTENSIONS = frozenset({".parquet"})
TAR_EXTENSIONS = frozenset({".tar"})
MANIFEST_NAMES: dict[str, str] = {"parquet": "manifest.parquet", "jsonl": "manifest.jsonl"}

#: Extra column naming a per-row read problem (e.g. a caption that is not UTF-8); else None.
PROBLEM_COLUMN = "read_problem"

_S3_WORKERS = 16


# ---------------------------------------------------------------------------------------------
# locations: a local directory or an S3 prefix, listed once


@dataclass
class _Tree:
    """A listed directory: ``root`` is an absolute dir or ``s3://bucket/prefix/``."""

    root: str
    files: list[str]  # relative POSIX paths, sorted
    s3: S3Config | None = None
    names: set[str] = field(init=False)

    def __post_init__(self) -> None:
        self.names = set(self.files)

    @property
    def is_s3(self) -> bool:
        return s3io.is_s3_uri(self.root)

    def uri(self, rel: str) -> str:
        if self.is_s3:
            return self.root + rel
        return os.path.join(self.root, *rel.split("/"))

    def read_bytes(self, rels: Iterable[str]) -> dict[str, bytes | InputDataError]:
        """Contents of ``rels`` (threaded for S3); per-file failures are returned, not raised."""

        def one(rel: str) -> bytes | InputDataError:
            uri = self.uri(rel)
            try:
                if self.is_s3:
                    return s3io.get_bytes(uri, self.s3)
                return Path(uri).read_bytes()
            except InputDataError as exc:
                return exc
            except OSError as exc:
                return InputDataError(f"{uri}: cannot read ({exc.strerror or exc})")

        todo = list(rels)
        if self.is_s3 and len(todo) > 1:
            with ThreadPoolExecutor(max_workers=_S3_WORKERS) as pool:
                return dict(zip(todo, pool.map(one, todo), strict=True))
        return {rel: one(rel) for rel in todo}


def _list_local(root: str, s3: S3Config | None) -> _Tree:
    def fail(exc: OSError) -> None:
        raise InputDataError(f"{exc.filename}: cannot list directory ({exc.strerror or exc})")

    files: list[str] = []
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, onerror=fail, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink cycle: each real directory is listed once
            dirnames.clear()
            continue
        seen.add(real)
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames:
            rel = name if rel_dir == "." else os.path.join(rel_dir, name)
            files.append(rel.replace(os.sep, "/"))
    return _Tree(root=root, files=sorted(files), s3=s3)


def _list_s3(uri: str, s3: S3Config | None) -> _Tree:
    bucket, prefix = s3io.parse_s3_uri(uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    root = s3io.s3_uri(bucket, prefix)
    keys = s3io.list_keys(uri, s3)
    return _Tree(root=root, files=[k[len(prefix) :] for k in keys], s3=s3)


def _ext(name: str) -> str:
    return posixpath.splitext(name)[1].lower()


# ---------------------------------------------------------------------------------------------
# manifests


def resolve_image_uri(image: str | None, base: str) -> str | None:
    """Resolve a manifest's image reference against ``base`` (the manifest's directory).

    ``base`` is an absolute local directory or an ``s3://bucket/prefix/``. Absolute paths and
    URIs with a scheme are kept; relative paths (also the tar part of ``x.tar#member``) are
    joined to ``base``. Blank references become None.
    """
    if image is None or not image.strip():
        return None
    ref = image.strip()
    tar = split_tar_member(ref)
    if tar is not None:
        tar_ref, member = tar
        resolved = resolve_image_uri(tar_ref, base)
        return tar_member_uri(resolved, member) if resolved else None
    if ref.startswith("file://"):
        ref = ref[len("file://") :]
    if "://" in ref:
        return ref
    if os.path.isabs(ref):
        return os.path.normpath(ref)
    if s3io.is_s3_uri(base):
        bucket, prefix = s3io.parse_s3_uri(base)
        return s3io.s3_uri(bucket, posixpath.normpath(posixpath.join(prefix, ref)))
    return os.path.normpath(os.path.join(base, ref))


def _read_manifest_file(path: Path, kind: str, origin: str) -> pd.DataFrame:
    """Read a local manifest as ``kind`` whatever its suffix; errors name ``origin``."""
    suffix = path.suffix.lower()
    with tempfile.TemporaryDirectory(prefix="pairflow-manifest-") as tmp:
        local = path
        if ("jsonl" if suffix in JSONL_EXTENSIONS else "parquet") != kind:
            # schema.read_manifest picks the reader by suffix: give it a correctly named link.
            local = Path(tmp) / ("manifest.jsonl" if kind == "jsonl" else "manifest.parquet")
            local.symlink_to(path)
        try:
            return read_manifest(local)
        except InputDataError as exc:
            if origin == str(local):
                raise
            raise InputDataError(str(exc).replace(str(local), origin)) from exc


def _read_manifest(uri: str, kind: str, s3: S3Config | None) -> pd.DataFrame:
    if s3io.is_s3_uri(uri):
        bucket, key = s3io.parse_s3_uri(uri)
        base = s3io.s3_uri(bucket, posixpath.dirname(key) + "/" if "/" in key else "")
        suffix = ".jsonl" if kind == "jsonl" else ".parquet"
        with tempfile.TemporaryDirectory(prefix="pairflow-manifest-") as tmp:
            local = Path(tmp) / f"manifest{suffix}"
            try:
                s3io.download_file(uri, local, s3)
            except s3io.S3NotFound as exc:
                problem = str(exc).partition(": ")[2]
                raise InputDataError(f"{uri}: manifest not found ({problem})") from exc
            df = _read_manifest_file(local, kind, uri)
    else:
        path = Path(uri)
        base = str(path.parent)
        df = _read_manifest_file(path, kind, uri)
    if df.empty:
        raise InputDataError(f"{uri}: manifest has no rows")
    df[PROBLEM_COLUMN] = [_escape_problem(v, base) for v in df["image"]]
    df["image"] = [resolve_image_uri(v, base) for v in df["image"]]
    return df


def _escape_problem(image: object, base: str) -> str | None:
    """A problem when a relative image reference climbs out of the manifest's directory."""
    if not isinstance(image, str) or not image.strip():
        return None
    ref = image.strip()
    tar = split_tar_member(ref)
    ref = tar[0] if tar is not None else ref
    if "://" in ref or os.path.isabs(ref):
        return None
    joined = posixpath.normpath(posixpath.join("/root", ref.replace(os.sep, "/")))
    if joined == "/root" or joined.startswith("/root/"):
        return None
    return f"unsafe_image_path: {ref!r} escapes the manifest directory {base}"


# ---------------------------------------------------------------------------------------------
# folders of images + sidecars


def _decode_sidecar(
    content: bytes | InputDataError | None, uri: str, problems: list[str]
) -> str | None:
    if content is None:
        return None
    if isinstance(content, InputDataError):
        problems.append(f"unreadable_sidecar: {content}")
        return None
    try:
        return content.decode("utf-8").strip()
    except UnicodeDecodeError as exc:
        code = "label_not_utf8" if uri.lower().endswith(".cls") else "caption_not_utf8"
        problems.append(f"{code}: {uri}: not UTF-8 text ({exc.reason} at byte {exc.start})")
        return None


def _read_folder(tree: _Tree, origin: str) -> pd.DataFrame:
    images: dict[str, list[str]] = {}
    sidecars: dict[str, dict[str, str]] = {}
    for rel in tree.files:
        stem, ext = posixpath.splitext(rel)
        ext = ext.lower()
        if ext in IMAGE_EXTENSIONS:
            images.setdefault(stem, []).append(rel)
        elif ext in {".txt", ".cls"}:
            sidecars.setdefault(stem, {})[ext] = rel
    stems = sorted(set(images) | set(sidecars))
    if not stems:
        raise InputDataError(
            f"{origin}: no image ({', '.join(sorted(IMAGE_EXTENSIONS))}) or .txt caption files "
            "found (empty folder?)"
        )
    contents = tree.read_bytes(rel for sc in sidecars.values() for rel in sc.values())
    rows: list[dict[str, Any]] = []
    for stem in stems:
        sc = sidecars.get(stem, {})
        problems: list[str] = []
        fields: dict[str, str | None] = {}
        for ext, col in ((".txt", "caption"), (".cls", "label")):
            side = sc.get(ext)
            fields[col] = (
                None if side is None else _decode_sidecar(contents[side], tree.uri(side), problems)
            )
        stem_images: list[str | None] = [*images.get(stem, [])] or [None]
        for img in stem_images:
            rows.append(
                {
                    "id": stem,
                    "image": None if img is None else tree.uri(img),
                    **fields,
                    "source": None,
                    PROBLEM_COLUMN: "; ".join(problems) or None,
                }
            )
    return pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, PROBLEM_COLUMN])


# ---------------------------------------------------------------------------------------------
# WebDataset shards


def wds_split(member: str) -> tuple[str, str]:
    """WebDataset ``(key, extension)`` of a tar member: ``a/b.seg.png`` → ``("a/b", "seg.png")``."""
    dirname, base = posixpath.split(member)
    stem, _, ext = base.partition(".")
    return posixpath.join(dirname, stem) if dirname else stem, ext


def _image_rank(ext: str) -> tuple[int, str]:
    """Sort key for a key's image members: plain ``jpg``/``png``... before ``seg.png`` etc."""
    return (0 if "." + ext.lower() in IMAGE_EXTENSIONS else 1, ext)


def _read_shard(tar_uri: str, s3: S3Config | None) -> list[dict[str, Any]]:
    try:
        path = local_tar(tar_uri, s3)
        index = tar_index(path)
    except InputDataError as exc:
        problem = str(exc).partition(": ")[2]
        raise InputDataError(f"{tar_uri}: {problem}") from exc
    groups: dict[str, dict[str, str]] = {}
    for member in index:
        key, ext = wds_split(member)
        groups.setdefault(key, {})[ext] = member
    rows: list[dict[str, Any]] = []
    for key in sorted(groups):
        members = groups[key]
        problems: list[str] = []
        fields: dict[str, str | None] = {}
        for ext, col in (("txt", "caption"), ("cls", "label")):
            side = members.get(ext)
            content: bytes | InputDataError | None = None
            if side is not None:
                try:
                    content = read_tar_member(path, side)
                except InputDataError as exc:
                    content = exc
            fields[col] = _decode_sidecar(content, tar_member_uri(tar_uri, side or ""), problems)
        image_exts = sorted(
            (e for e in members if _ext("x." + e) in IMAGE_EXTENSIONS), key=_image_rank
        )
        image = tar_member_uri(tar_uri, members[image_exts[0]]) if image_exts else None
        rows.append(
            {
                "id": key,
                "image": image,
                **fields,
                "source": None,
                PROBLEM_COLUMN: "; ".join(problems) or None,
            }
        )
    return rows


def _read_webdataset(tar_uris: list[str], origin: str, s3: S3Config | None) -> pd.DataFrame:
    if not tar_uris:
        raise InputDataError(f"{origin}: no .tar shards found")
    rows: list[dict[str, Any]] = []
    for uri in tar_uris:
        rows.extend(_read_shard(uri, s3))
    if not rows:
        raise InputDataError(f"{origin}: tar shards contain no files")
    return pd.DataFrame(rows, columns=[*MANIFEST_COLUMNS, PROBLEM_COLUMN])


# ---------------------------------------------------------------------------------------------
# dispatch


def _format_of_file(name: str) -> ResolvedFormat | None:
    ext = _ext(name)
    if ext in PARQUET_EXTENSIONS:
        return "parquet"
    if ext in JSONL_EXTENSIONS:
        return "jsonl"
    if ext in TAR_EXTENSIONS:
        return "webdataset"
    return None


def _detect_in_tree(tree: _Tree) -> ResolvedFormat:
    if MANIFEST_NAMES["parquet"] in tree.names:
        return "parquet"
    if MANIFEST_NAMES["jsonl"] in tree.names:
        return "jsonl"
    if any(_ext(f) in TAR_EXTENSIONS for f in tree.files):
        return "webdataset"
    return "folder"


def _normalize_source(source: str) -> str:
    src = source.strip()
    if not src:
        raise InputDataError("data source is empty: set data.source to a path or s3:// URI")
    if src.startswith("file://"):
        src = src[len("file://") :]
    if s3io.is_s3_uri(src):
        s3io.parse_s3_uri(src)
        return src
    if "://" in src:
        raise InputDataError(f"{source}: unsupported URI scheme (use a local path or s3://)")
    return os.path.abspath(os.path.expanduser(src))


def load_source(
    source: str, fmt: SourceFormat = "auto", s3: S3Config | None = None
) -> tuple[pd.DataFrame, ResolvedFormat]:
    """Read ``source`` as ``fmt``; returns the rows and the format actually used."""
    if fmt not in FORMATS:
        raise InputDataError(f"{source}: unknown format {fmt!r} (expected one of {FORMATS})")
    src = _normalize_source(source)
    file_fmt = _format_of_file(src)
    tree: _Tree | None = None
    if s3io.is_s3_uri(src):
        if file_fmt is None:
            tree = _list_s3(src, s3)
            if not tree.files:
                raise InputDataError(f"{src}: data source not found (no objects under prefix)")
    elif not os.path.exists(src):
        raise InputDataError(f"{src}: data source not found")
    elif os.path.isdir(src):
        tree = _list_local(src, s3)
    elif fmt == "auto" and file_fmt is None:
        raise InputDataError(
            f"{src}: unknown source format (expected .parquet, .jsonl or .tar, a folder, "
            "or an explicit data.format)"
        )

    resolved: ResolvedFormat
    if fmt != "auto":
        resolved = fmt
    elif tree is not None:
        resolved = _detect_in_tree(tree)
    else:
        assert file_fmt is not None
        resolved = file_fmt

    if resolved in ("parquet", "jsonl"):
        target = src
        if tree is not None:
            name = MANIFEST_NAMES[resolved]
            if name not in tree.names:
                raise InputDataError(f"{src}: no {name} in this directory (format {resolved!r})")
            target = tree.uri(name)
        df = _read_manifest(target, resolved, s3)
    elif resolved == "webdataset":
        tars = [src] if tree is None else [tree.uri(f) for f in tree.files if _ext(f) == ".tar"]
        df = _read_webdataset(tars, src, s3)
    elif tree is None:
        raise InputDataError(f"{src}: format 'folder' needs a directory or prefix, got a file")
    else:
        df = _read_folder(tree, src)

    df["source"] = [src if v is None else v for v in df["source"]]
    return df.reset_index(drop=True), resolved


def read_source(
    source: str, fmt: SourceFormat = "auto", s3: S3Config | None = None
) -> pd.DataFrame:
    """Read ``source`` into a manifest DataFrame with resolved image URIs (never drops rows)."""
    return load_source(source, fmt, s3)[0]
