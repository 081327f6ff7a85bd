"""Where the sink writes: Parquet parts partitioned by each row's hour, content-addressed images.

``prefix`` is an ``s3://`` prefix (boto3 with ``data.s3.endpoint_url``) or a local folder.
Parts: ``<prefix>/dt=YYYY-MM-DD/hour=HH/part-<uuid>.parquet`` (one per partition per flush);
images: ``<prefix>/images/<sha256>.<ext>``. Writes of local files are atomic (temp + rename);
an S3 put is atomic by itself. Storage failures surface as :class:`StorageError`.
"""

from __future__ import annotations

import contextlib
import io
import os
import uuid
from datetime import datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from botocore.exceptions import BotoCoreError, ClientError

from pairflow.config import S3Config
from pairflow.data import s3 as s3io
from pairflow.errors import InputDataError
from pairflow.serve.requestlog.window import PART_PREFIX, PART_SUFFIX, partition_dir

IMAGE_EXT = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp"}


class StorageError(Exception):
    """The log store could not be written (S3 down, disk full): the sink keeps the rows."""


def image_uri(prefix: str, sha256: str, image_format: str | None) -> str:
    """Content address of an image's bytes under ``prefix``."""
    ext = IMAGE_EXT.get((image_format or "").upper(), "bin")
    return f"{prefix.rstrip('/')}/images/{sha256}.{ext}"


def write_parts(prefix: str, table: pa.Table, s3: S3Config | None = None) -> list[str]:
    """Write ``table`` as one part per hour partition of its ``ts``; returns the part URIs."""
    if table.num_rows == 0:
        return []
    hours = pc.floor_temporal(table.column("ts"), unit="hour")
    uris: list[str] = []
    for hour in pc.unique(hours).to_pylist():
        part = table.filter(pc.equal(hours, pa.scalar(hour, hours.type)))
        uri = f"{prefix.rstrip('/')}/{partition_dir(_utc(hour))}/{PART_PREFIX}{uuid.uuid4().hex}"
        uri += PART_SUFFIX
        buf = io.BytesIO()
        pq.write_table(storable(part), buf, compression="zstd")
        put(uri, buf.getvalue(), s3)
        uris.append(uri)
    return uris


def storable(table: pa.Table) -> pa.Table:
    """``table`` with its fixed-size embedding lists as plain lists, the schema metadata kept.

    Arrow C++ (pyarrow <= 25) writes null fixed-size lists to Parquet but cannot read them
    back ("Expected all lists to be of size=N but index i had size=0", apache/arrow#35692);
    a plain list round-trips nulls, and :func:`pairflow.serve.requestlog.window.read_window` casts
    it
    back to the fixed width recorded in the metadata.
    """
    fields = [
        pa.field(f.name, pa.list_(f.type.value_type), f.nullable)
        if pa.types.is_fixed_size_list(f.type)
        else f
        for f in table.schema
    ]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def exists(uri: str, s3: S3Config | None = None) -> bool:
    """Whether the object/file at ``uri`` exists (a storage failure raises StorageError)."""
    if s3io.is_s3_uri(uri):
        try:
            s3io.head_object(uri, s3)
        except s3io.S3NotFound:
            return False
        except InputDataError as exc:
            raise StorageError(str(exc)) from exc
        return True
    return Path(uri).is_file()


def put(uri: str, data: bytes, s3: S3Config | None = None) -> None:
    """Write ``data`` at ``uri`` (S3 object or local file, atomically)."""
    if s3io.is_s3_uri(uri):
        bucket, key = s3io.parse_s3_uri(uri)
        try:
            s3io.s3_client(s3).put_object(Bucket=bucket, Key=key, Body=data)
        except (BotoCoreError, ClientError) as exc:
            raise StorageError(str(s3io.translate_error(exc, uri))) from exc
        return
    path = Path(uri)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # never created
            tmp.unlink()
        raise StorageError(f"{uri}: cannot write ({exc})") from exc


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError(f"partition hour {value} has no timezone")
    return value
