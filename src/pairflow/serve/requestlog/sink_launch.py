"""Start ``pairflow monitor-sink`` from Python, next to a local ``pairflow serve``.

Usage (the demo's round 3, tests)::

    sink = start_sink("s3://bucket/logs", sets=["data.s3.endpoint_url=http://..."])
    # serve with: pairflow serve --model ... *sink.serve_args(sample_rate=1.0)
    #   (= --set monitor.sink_url={sink.url} --set monitor.sample_rate=1.0)
    ...
    sink.flush()   # write what is buffered now (else flush_rows / flush_seconds)
    sink.stop()    # SIGTERM: the sink writes what is left, then exits
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairflow.errors import PairflowError


class SinkStartError(PairflowError):
    """The sink process exited or did not answer /healthz in time."""


@dataclass
class SinkHandle:
    """A running sink process: ``url`` is what ``monitor.sink_url`` should be set to."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def serve_args(self, sample_rate: float | None = None) -> list[str]:
        """``pairflow serve`` arguments that log to this sink (``--set monitor.sink_url=...``,
        and ``monitor.sample_rate`` when given), e.g. for ``deploy.local.command``."""
        args = ["--set", f"monitor.sink_url={self.url}"]
        if sample_rate is not None:
            args += ["--set", f"monitor.sample_rate={sample_rate}"]
        return args

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as resp:
            doc: dict[str, Any] = json.loads(resp.read())
        return doc

    def flush(self) -> int:
        """Write the buffered rows now; returns how many (PairflowError when storage is down)."""
        req = urllib.request.Request(f"{self.url}/flush", data=b"", method="POST")
        try:
            with urllib.request.urlopen(req, timeout=120) as resp:
                return int(json.loads(resp.read())["written"])
        except urllib.error.HTTPError as exc:
            raise PairflowError(f"monitor-sink flush: {exc.code} {exc.read().decode()}") from exc

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM (the sink writes what it buffered), wait; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_sink(
    log_prefix: str,
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    sets: Sequence[str] = (),
    config: Path | None = None,
    log_path: Path | None = None,
    env: Mapping[str, str] | None = None,
    pair_ttl_s: float = 60.0,
    retry_s: float = 2.0,
    timeout_s: float = 60.0,
) -> SinkHandle:
    """Start ``pairflow monitor-sink`` writing to ``log_prefix`` and wait until it answers.

    ``sets``: more ``key=value`` config overrides (``monitor.flush_rows=...``,
    ``data.s3.endpoint_url=...``); ``port`` 0 picks a free one; the process output goes to
    ``log_path`` (default: a temporary file).
    """
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "pairflow.cli", "monitor-sink", "--host", host]
    cmd += ["--port", str(port), "--pair-ttl", str(pair_ttl_s), "--retry", str(retry_s)]
    if config is not None:
        cmd += ["--config", str(config)]
    for item in [f"monitor.log_prefix={log_prefix}", *sets]:
        cmd += ["--set", item]
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="monitor-sink-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    with log_path.open("wb") as fh:
        proc = subprocess.Popen(
            cmd,
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=dict(env if env is not None else os.environ),
        )
    handle = SinkHandle(proc, f"http://{host}:{port}", log_path)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise SinkStartError(f"monitor-sink exited with {proc.returncode}: {handle.tail()}")
        try:
            handle.health()
            return handle
        except OSError:
            if time.monotonic() > deadline:
                handle.stop(5)
                raise SinkStartError(
                    f"monitor-sink did not answer {handle.url}/healthz within {timeout_s} s: "
                    f"{handle.tail()}"
                ) from None
            time.sleep(0.1)
