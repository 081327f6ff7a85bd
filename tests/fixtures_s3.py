"""S3 fixtures: a real S3 API server (moto) on 127.0.0.1, driven over HTTP with boto3.

``moto_server`` starts ``python -m moto.server`` as a subprocess once per session, with dummy
credentials in the environment (restored afterwards). Code under test reaches it exactly as
it would reach MinIO or AWS: through ``S3Config.endpoint_url``.
Register with ``pytest_plugins = ["tests.fixtures_s3"]``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pairflow.config import S3Config
from pairflow.data import s3 as s3io

_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_UNSET = ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SECURITY_TOKEN")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited with {proc.returncode}: {log.read_text()}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answered HTTP
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"moto server at {url} did not answer within {timeout}s: {log.read_text()}")


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Endpoint URL of a real moto S3 server on loopback (dummy credentials set meanwhile)."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with pytest.MonkeyPatch.context() as mp:
        for name, value in _CREDENTIALS.items():
            mp.setenv(name, value)
        for name in _UNSET:
            mp.delenv(name, raising=False)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        mp.setenv("PAIRFLOW_CACHE", str(tmp_path_factory.mktemp("pairflow-cache")))
        with log.open("wb") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        try:
            _wait_http(url + "/moto-api/", proc, log)
            s3io.clear_client_cache()
            yield url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
            s3io.clear_client_cache()


@pytest.fixture
def s3_config(moto_server: str) -> S3Config:
    """An :class:`S3Config` pointing at the moto server."""
    return S3Config(endpoint_url=moto_server)


@pytest.fixture
def s3_bucket(s3_config: S3Config) -> Iterator[str]:
    """A fresh, empty bucket for this test (deleted with its objects afterwards)."""
    name = f"pairflow-test-{uuid.uuid4().hex[:12]}"
    client = s3io.s3_client(s3_config)
    client.create_bucket(Bucket=name)
    yield name
    for key in s3io.list_keys(s3io.s3_uri(name, ""), s3_config):
        client.delete_object(Bucket=name, Key=key)
    client.delete_bucket(Bucket=name)
