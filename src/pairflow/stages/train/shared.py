"""Storage every TrainJob node and the train step reach: an ``s3://`` prefix or a mounted path.

A job folder (``<train.trainjob.shared_dir>/<job name>/``) holds ``job.json`` (what the nodes
run), ``config.json``, the manifest, ``checkpoints/`` (rank 0 writes, every node resumes from
it), ``model/`` and ``result.json``. On S3 the nodes work in a local scratch folder and copy
to and from the prefix; on a path (a PVC mounted in every pod) they use it directly.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pairflow.config import S3Config
from pairflow.data import s3 as s3io


class SharedStore:
    """Files under one shared root: ``put``/``get`` single files, ``push``/``pull`` trees."""

    def __init__(self, root: str, s3: S3Config | None = None) -> None:
        if not root:
            raise ValueError("shared storage root is empty")
        self.root = root.rstrip("/")
        self.s3 = s3
        self.is_s3 = s3io.is_s3_uri(root)

    def uri(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def child(self, rel: str) -> SharedStore:
        return SharedStore(self.uri(rel), self.s3)

    def local_path(self) -> Path | None:
        """The root as a local path (a mounted volume), or None on S3."""
        return None if self.is_s3 else Path(self.root)

    def put(self, local: Path, rel: str) -> None:
        if self.is_s3:
            s3io.upload_file(local, self.uri(rel), self.s3)
        else:
            dest = Path(self.uri(rel))
            dest.parent.mkdir(parents=True, exist_ok=True)
            if local.resolve() != dest.resolve():
                shutil.copyfile(local, dest)

    def put_bytes(self, data: bytes, rel: str) -> None:
        if self.is_s3:
            s3io.put_bytes(self.uri(rel), data, self.s3)
        else:
            dest = Path(self.uri(rel))
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(data)

    def get_bytes(self, rel: str) -> bytes:
        if self.is_s3:
            return s3io.get_bytes(self.uri(rel), self.s3)
        return Path(self.uri(rel)).read_bytes()

    def exists(self, rel: str) -> bool:
        if self.is_s3:
            bucket, key = s3io.parse_s3_uri(self.uri(rel))
            return key in s3io.list_keys(s3io.s3_uri(bucket, key.rsplit("/", 1)[0]), self.s3)
        return Path(self.uri(rel)).exists()

    def get(self, rel: str, local: Path) -> Path:
        if self.is_s3:
            return s3io.download_file(self.uri(rel), local, self.s3)
        local.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.uri(rel), local)
        return local

    def push_tree(self, local: Path, rel: str) -> None:
        """Upload every file under ``local`` to ``rel/``."""
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            self.put(path, f"{rel}/{path.relative_to(local).as_posix()}")

    def pull_tree(self, rel: str, local: Path) -> int:
        """Download every file under ``rel/`` into ``local``; the number of files."""
        if not self.is_s3:
            src = Path(self.uri(rel))
            if not src.exists():
                return 0
            shutil.copytree(src, local, dirs_exist_ok=True)
            return sum(1 for p in src.rglob("*") if p.is_file())
        bucket, prefix = s3io.parse_s3_uri(self.uri(rel))
        keys = s3io.list_keys(s3io.s3_uri(bucket, prefix), self.s3)
        for key in keys:
            s3io.download_file(s3io.s3_uri(bucket, key), local / key[len(prefix) + 1 :], self.s3)
        return len(keys)

    def prune(self, keep: set[str]) -> int:
        """Delete every top-level entry under the root not named in ``keep``; how many files."""
        if not self.is_s3:
            root = Path(self.root)
            gone = [p for p in root.iterdir() if p.name not in keep] if root.exists() else []
            for p in gone:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
            return len(gone)
        bucket, prefix = s3io.parse_s3_uri(self.root)
        keys = s3io.list_keys(self.root, self.s3)
        drop = [k for k in keys if k[len(prefix) + 1 :].split("/", 1)[0] not in keep]
        client = s3io.s3_client(self.s3)
        for key in drop:
            with s3io.s3_errors(s3io.s3_uri(bucket, key)):
                client.delete_object(Bucket=bucket, Key=key)
        return len(drop)
