"""A real ``mlflow server`` on 127.0.0.1 (sqlite backend, served artifacts), per test session."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Tracking URI (http://127.0.0.1:PORT) of a real MLflow server, stopped after the session."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log: Path = root / "server.log"
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    cmd = [
        str(mlflow_bin),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--workers",
        "1",
    ]
    env = {**os.environ, "MLFLOW_TRACKING_URI": ""}
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 90
        last_error: Exception | None = None
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {proc.returncode}: {log.read_text()}")
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except (urllib.error.URLError, OSError) as exc:
                last_error = exc  # not up yet
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server not healthy after 90 s ({last_error}): {log.read_text()}"
                )
            time.sleep(0.25)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def register_gated_versions(
    tracking_uri: str, prefix: str, loggers: Sequence[Callable[[Any, str], None]]
) -> list[str]:
    """Register one version per ``loggers`` entry under a fresh model name ``prefix-<hex>``.

    Each logger gets ``(client, run_id)`` of a new run in the Default experiment and logs the
    model under ``model/``; every version is tagged gate passed and complete (what deploy
    requires), and version 1 becomes ``champion``. Returns the ``models:/NAME/V`` URIs.
    """
    from mlflow.tracking import MlflowClient

    from pairflow.registry.names import TAG_COMPLETE, TAG_GATE

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    name = f"{prefix}-{os.urandom(4).hex()}"
    client.create_registered_model(name)
    exp = client.get_experiment_by_name("Default")
    assert exp is not None
    uris = []
    for log_model in loggers:
        run = client.create_run(exp.experiment_id)
        log_model(client, run.info.run_id)
        client.set_terminated(run.info.run_id)
        mv = client.create_model_version(
            name,
            f"runs:/{run.info.run_id}/model",
            run_id=run.info.run_id,
            tags={TAG_GATE: "passed", TAG_COMPLETE: "true"},
        )
        uris.append(f"models:/{name}/{mv.version}")
    client.set_registered_model_alias(name, "champion", "1")
    return uris
