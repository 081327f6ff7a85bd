"""``pairflow ui`` passes SIGTERM/SIGINT to the MLflow server it starts; nothing outlives it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil  # type: ignore[import-untyped]
import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "pairflow ui exited before the server answered"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer in {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_ui_stops_its_server_and_workers(tmp_path: Path, sig: signal.Signals) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pairflow.cli",
            "ui",
            "--workdir",
            str(tmp_path),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        # the UI serves the workdir's own store, not whatever an earlier test pointed MLflow at
        env={k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"},
    )
    try:
        _wait_http(f"http://127.0.0.1:{port}/health", proc)
        tree = psutil.Process(proc.pid).children(recursive=True)
        assert tree, "the MLflow server runs as a child of pairflow ui"
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
        assert code == 128 + sig
        _, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, [p.pid for p in alive]
        with pytest.raises(OSError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
    finally:
        if proc.poll() is None:
            proc.kill()
