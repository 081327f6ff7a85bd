"""Read image bytes from any resolved image URI: local path, ``s3://`` object or tar member.

URI forms (what ingest writes into manifests):

- ``/abs/path/img.jpg``: a local file (``file://`` prefix accepted);
- ``s3://bucket/key.jpg``: an S3 object;
- ``<tar>#<member>``: a member of a WebDataset shard, where ``<tar>`` is an absolute local
  path or an ``s3://`` URI ending in ``.tar`` (e.g. ``s3://b/shards/000.tar#k1.jpg``).

Local tars are indexed once per process (member → data offset, size) so later reads seek
directly. S3 tars are downloaded once into a content cache keyed by endpoint, bucket, key
and ETag (``$PAIRFLOW_CACHE/s3``, default ``~/.cache/pairflow/s3``), then read as local.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import threading
from functools import lru_cache
from pathlib import Path

from pairflow.config import S3Config
from pairflow.data import s3 as s3io
from pairflow.errors import InputDataError

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"})
TAR_MEMBER_SEP = "#"
_TAR_MARK = ".tar" + TAR_MEMBER_SEP

TarIndex = dict[str, tuple[int, int]]


class ImageNotFound(InputDataError):
    """The image a URI names does not exist (missing file, S3 key or tar member)."""


def split_tar_member(uri: str) -> tuple[str, str] | None:
    """``(tar_uri, member)`` for ``<...>.tar#<member>`` URIs, else None.

    The split is at the first ``.tar#`` (case-insensitive), so local paths may contain ``#``.
    """
    idx = uri.lower().find(_TAR_MARK)
    if idx < 0:
        return None
    cut = idx + len(".tar")
    return uri[:cut], uri[cut + 1 :]


def tar_member_uri(tar_uri: str, member: str) -> str:
    """Build ``<tar_uri>#<member>``."""
    return f"{tar_uri}{TAR_MEMBER_SEP}{member}"


def cache_dir() -> Path:
    """Where S3 tar shards are cached: ``$PAIRFLOW_CACHE/s3``, else ``~/.cache/pairflow/s3``."""
    root = os.environ.get("PAIRFLOW_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "pairflow"
    return base / "s3"


def _local_path(uri: str) -> str:
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    if not os.path.isabs(path):
        raise InputDataError(
            f"{uri}: image path is relative; expected an absolute path or s3:// URI "
            "(manifests are resolved by ingest)"
        )
    return path


# ---------------------------------------------------------------------------------------------
# tar shards


def tar_index(path: str | Path) -> TarIndex:
    """``{member name: (data offset, size)}`` of the regular files in the tar at ``path``.

    Cached per (path, mtime, size), so a rewritten shard is re-indexed.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError as exc:
        raise ImageNotFound(f"{p}: tar shard not found") from exc
    except OSError as exc:
        raise InputDataError(f"{p}: cannot read tar shard ({exc.strerror or exc})") from exc
    return _tar_index_cached(str(p), st.st_mtime_ns, st.st_size)


@lru_cache(maxsize=256)
def _tar_index_cached(path: str, mtime_ns: int, size: int) -> TarIndex:
    index: TarIndex = {}
    try:
        with tarfile.open(path, mode="r:") as tf:
            for info in tf:
                if info.isreg():
                    index.setdefault(info.name, (info.offset_data, info.size))
    except (tarfile.TarError, OSError) as exc:
        raise InputDataError(f"{path}: not a readable tar shard ({exc})") from exc
    return index


def read_tar_member(path: str | Path, member: str, uri: str | None = None) -> bytes:
    """Bytes of ``member`` in the local tar at ``path`` (errors name ``uri`` when given)."""
    name = uri or tar_member_uri(str(path), member)
    try:
        index = tar_index(path)
    except ImageNotFound as exc:
        raise ImageNotFound(f"{name}: image not found (tar shard {path} missing)") from exc
    entry = index.get(member)
    if entry is None:
        raise ImageNotFound(f"{name}: image not found (no such member in tar shard)")
    offset, size = entry
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size)
    except OSError as exc:
        raise InputDataError(f"{name}: cannot read tar member ({exc.strerror or exc})") from exc
    if len(data) != size:
        raise InputDataError(f"{name}: tar shard is truncated")
    return data


_s3_tars: dict[tuple[str | None, str], Path] = {}
_s3_tar_locks: dict[tuple[str | None, str], threading.Lock] = {}
_s3_tar_guard = threading.Lock()


def local_tar(tar_uri: str, s3: S3Config | None = None) -> Path:
    """A local path for the tar shard ``tar_uri``; S3 shards are downloaded once and cached."""
    if not s3io.is_s3_uri(tar_uri):
        return Path(_local_path(tar_uri))
    cfg = s3 or S3Config()
    memo_key = (cfg.endpoint_url or os.environ.get("AWS_ENDPOINT_URL"), tar_uri)
    with _s3_tar_guard:
        lock = _s3_tar_locks.setdefault(memo_key, threading.Lock())
    with lock:
        cached = _s3_tars.get(memo_key)
        if cached is not None and cached.exists():
            return cached
        try:
            etag, size = s3io.head_object(tar_uri, cfg)
        except s3io.S3NotFound as exc:
            raise ImageNotFound(f"{tar_uri}: tar shard not found in S3") from exc
        bucket, key = s3io.parse_s3_uri(tar_uri)
        digest = hashlib.sha256(
            f"{memo_key[0] or ''}\n{bucket}\n{key}\n{etag}".encode()
        ).hexdigest()
        dest = cache_dir() / bucket / f"{digest[:32]}-{os.path.basename(key)}"
        if not (dest.exists() and dest.stat().st_size == size):
            s3io.download_file(tar_uri, dest, cfg)
        _s3_tars[memo_key] = dest
        return dest


def clear_caches() -> None:
    """Forget tar indexes and the in-process S3 shard memo (files on disk are kept)."""
    _tar_index_cached.cache_clear()
    with _s3_tar_guard:
        _s3_tars.clear()


# ---------------------------------------------------------------------------------------------
# the one entry point


def read_image_bytes(uri: str, s3: S3Config | None = None) -> bytes:
    """The raw bytes of the image at ``uri`` (see module docstring for the URI forms).

    Raises :class:`ImageNotFound` when the file, key or tar member does not exist, and
    :class:`InputDataError` for any other read failure; messages name ``uri``.
    """
    if not uri:
        raise ImageNotFound("<empty>: image URI is empty")
    tar = split_tar_member(uri)
    if tar is not None:
        tar_uri, member = tar
        if not member:
            raise InputDataError(f"{uri}: tar member name is empty")
        try:
            tar_path = local_tar(tar_uri, s3)
        except ImageNotFound as exc:
            raise ImageNotFound(f"{uri}: image not found (tar shard {tar_uri} missing)") from exc
        return read_tar_member(tar_path, member, uri)
    if s3io.is_s3_uri(uri):
        try:
            return s3io.get_bytes(uri, s3)
        except s3io.S3NotFound as exc:
            problem = str(exc).partition(": ")[2]
            raise ImageNotFound(f"{uri}: image not found ({problem})") from exc
    if "://" in uri and not uri.startswith("file://"):
        raise InputDataError(f"{uri}: unsupported image URI scheme (use a local path or s3://)")
    local = _local_path(uri)
    try:
        with open(local, "rb") as fh:  # plain open: pathlib costs ~10 us per image here
            return fh.read()
    except FileNotFoundError as exc:
        raise ImageNotFound(f"{uri}: image not found") from exc
    except IsADirectoryError as exc:
        raise InputDataError(f"{uri}: is a directory, not an image file") from exc
    except OSError as exc:
        raise InputDataError(f"{uri}: cannot read image ({exc.strerror or exc})") from exc
