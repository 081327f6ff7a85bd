"""S3 access through boto3: one client per endpoint, paginated listing, typed error messages.

The endpoint comes from :class:`~pairflow.config.S3Config` (``endpoint_url``: MinIO, moto, or
empty for AWS S3; boto3 then honours ``$AWS_ENDPOINT_URL`` itself). Credentials come only from
the environment (variables, shared files or an instance/pod role), never from config.
Every botocore failure is re-raised as an :class:`~pairflow.errors.InputDataError` whose
one-line message names the URI and the problem.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config as BotoConfig
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

from pairflow.config import S3Config
from pairflow.errors import InputDataError

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

S3_SCHEME = "s3://"

_NOT_FOUND_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "404", "NotFound"})
_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "403",
        "Forbidden",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AllAccessDisabled",
    }
)


class S3NotFound(InputDataError):
    """The bucket or key named by an ``s3://`` URI does not exist."""


def is_s3_uri(uri: str) -> bool:
    """True for ``s3://...`` URIs."""
    return uri.startswith(S3_SCHEME)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/key`` into ``(bucket, key)``; the key may be empty."""
    if not is_s3_uri(uri):
        raise InputDataError(f"{uri}: not an s3:// URI")
    bucket, _, key = uri[len(S3_SCHEME) :].partition("/")
    if not bucket:
        raise InputDataError(f"{uri}: s3 URI has no bucket name")
    return bucket, key


def s3_uri(bucket: str, key: str) -> str:
    """Build ``s3://bucket/key``."""
    return f"{S3_SCHEME}{bucket}/{key}"


_clients: dict[tuple[str | None, ...], S3Client] = {}
_clients_lock = threading.Lock()


def s3_client(cfg: S3Config | None = None) -> S3Client:
    """A boto3 S3 client for ``cfg`` (cached per endpoint, region and credential environment)."""
    cfg = cfg or S3Config()
    endpoint = cfg.endpoint_url or None
    env = os.environ
    cache_key = (
        endpoint,
        cfg.region,
        env.get("AWS_ENDPOINT_URL"),
        env.get("AWS_ENDPOINT_URL_S3"),
        env.get("AWS_ACCESS_KEY_ID"),
        env.get("AWS_PROFILE"),
    )
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            session = boto3.session.Session()
            client = session.client(
                "s3",
                endpoint_url=endpoint,
                region_name=cfg.region,
                config=BotoConfig(
                    connect_timeout=10,
                    read_timeout=60,
                    retries={"max_attempts": 3, "mode": "standard"},
                ),
            )
            _clients[cache_key] = client
        return client


def clear_client_cache() -> None:
    """Forget cached clients (after changing credentials or endpoints in-process)."""
    with _clients_lock:
        _clients.clear()


def translate_error(exc: BotoCoreError | ClientError, uri: str) -> InputDataError:
    """Map a botocore error on ``uri`` to a one-line :class:`InputDataError`."""
    if isinstance(exc, ClientError):
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "")) or "unknown"
        message = str(err.get("Message", "")).strip()
        if code in _NOT_FOUND_CODES:
            what = {"NoSuchBucket": "no such bucket", "NoSuchKey": "no such key"}.get(
                code, "not found (no such bucket or key)"
            )
            return S3NotFound(f"{uri}: {what}")
        if code in _DENIED_CODES:
            return InputDataError(
                f"{uri}: access denied ({code}); check the AWS credentials in the environment"
            )
        return InputDataError(f"{uri}: S3 error {code}" + (f" ({message})" if message else ""))
    if isinstance(exc, EndpointConnectionError):
        return InputDataError(
            f"{uri}: cannot reach S3 endpoint {exc.kwargs.get('endpoint_url', '')} "
            "(check data.s3.endpoint_url / AWS_ENDPOINT_URL)"
        )
    if isinstance(exc, NoCredentialsError):
        return InputDataError(
            f"{uri}: no AWS credentials found (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
            "or use a role)"
        )
    return InputDataError(f"{uri}: S3 request failed ({exc})")


@contextmanager
def s3_errors(uri: str) -> Iterator[None]:
    """Re-raise botocore errors inside the block as :class:`InputDataError` naming ``uri``."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate_error(exc, uri) from exc


def list_keys(uri: str, cfg: S3Config | None = None) -> list[str]:
    """All keys under the prefix of ``uri`` (paginated), sorted; empty when there are none.

    A prefix not ending in ``/`` is treated as a directory: ``s3://b/data`` lists ``data/...``.
    """
    bucket, prefix = parse_s3_uri(uri)
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    client = s3_client(cfg)
    keys: list[str] = []
    with s3_errors(uri):
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            keys.extend(obj["Key"] for obj in page.get("Contents", []) if "Key" in obj)
    return sorted(k for k in keys if not k.endswith("/"))


def head_object(uri: str, cfg: S3Config | None = None) -> tuple[str, int]:
    """``(etag, size)`` of the object at ``uri``."""
    bucket, key = parse_s3_uri(uri)
    with s3_errors(uri):
        head = s3_client(cfg).head_object(Bucket=bucket, Key=key)
    return str(head.get("ETag", "")).strip('"'), int(head.get("ContentLength", 0))


def get_bytes(uri: str, cfg: S3Config | None = None) -> bytes:
    """The content of the object at ``uri``."""
    bucket, key = parse_s3_uri(uri)
    if not key:
        raise InputDataError(f"{uri}: s3 URI has no object key")
    with s3_errors(uri):
        body = s3_client(cfg).get_object(Bucket=bucket, Key=key)["Body"]
        try:
            return body.read()
        finally:
            body.close()


def download_file(uri: str, dest: str | Path, cfg: S3Config | None = None) -> Path:
    """Download the object at ``uri`` to ``dest`` (atomically: temp file, then rename)."""
    bucket, key = parse_s3_uri(uri)
    if not key:
        raise InputDataError(f"{uri}: s3 URI has no object key")
    out = Path(dest)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        with s3_errors(uri):
            s3_client(cfg).download_file(bucket, key, str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def put_bytes(uri: str, data: bytes, cfg: S3Config | None = None) -> str:
    """Write ``data`` to the object at ``uri``; returns ``uri``."""
    bucket, key = parse_s3_uri(uri)
    with s3_errors(uri):
        s3_client(cfg).put_object(Bucket=bucket, Key=key, Body=data)
    return uri


def upload_file(path: str | Path, uri: str, cfg: S3Config | None = None) -> str:
    """Upload the local file ``path`` to ``uri``; returns ``uri``."""
    bucket, key = parse_s3_uri(uri)
    with s3_errors(uri):
        s3_client(cfg).upload_file(str(path), bucket, key)
    return uri
