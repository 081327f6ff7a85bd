"""A real ``pairflow serve`` subprocess for tests, with readiness polled from its start."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServeProc:
    proc: subprocess.Popen[bytes]
    url: str
    grpc: str
    name: str
    log: Path
    # (seconds since start, /v2/health/ready is 200, /v2/models/NAME/ready is 200)
    polls: list[tuple[float, bool, bool]] = field(default_factory=list)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_serve(
    model: str,
    workdir: Path,
    *,
    name: str,
    sets: dict[str, str],
    tracking_uri: str | None = None,
    timeout_s: float = 180.0,
    extra_sets: Sequence[str] = (),
) -> ServeProc:
    """Start the server and poll both readiness endpoints every 50 ms from process start
    until the model has been ready for a few polls (records every poll in ``polls``).

    ``sets`` are ``serve.*`` keys; ``extra_sets`` full ``key=value`` overrides (``monitor.*``)."""
    port, grpc_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "pairflow.cli", "serve", "--model", model]
    cmd += ["--port", str(port), "--grpc-port", str(grpc_port), "--name", name]
    if tracking_uri:
        cmd += ["--tracking-uri", tracking_uri]
    for key, value in sets.items():
        cmd += ["--set", f"serve.{key}={value}"]
    for item in extra_sets:
        cmd += ["--set", item]
    log = workdir / f"serve-{port}.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env={**os.environ})
    started = time.monotonic()
    sp = ServeProc(proc, f"http://127.0.0.1:{port}", f"127.0.0.1:{grpc_port}", name, log)
    client = httpx.Client(base_url=sp.url, timeout=1.0)
    ready_polls = 0
    while ready_polls < 5:
        if proc.poll() is not None or time.monotonic() - started > timeout_s:
            sp.stop()
            raise AssertionError(f"server not ready (exit {proc.poll()}): {sp.tail()}")
        server = model_ok = False
        with contextlib.suppress(httpx.TransportError):
            server = client.get("/v2/health/ready").status_code == 200
            model_ok = client.get(f"/v2/models/{name}/ready").status_code == 200
        sp.polls.append((time.monotonic() - started, server, model_ok))
        ready_polls += int(server and model_ok)
        time.sleep(0.05)
    client.close()
    return sp


@dataclass
class Load:
    """Threads posting ``body`` to ``path`` until stopped; one fresh connection per request
    (``fresh``) or one kept-alive connection per thread."""

    url: str
    path: str
    body: bytes
    threads: int
    fresh: bool = True
    results: list[tuple[float, float, int | str]] = field(default_factory=list)  # start, s, code
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        kept = None if self.fresh else httpx.Client(base_url=self.url, timeout=60)
        while not self._stop.is_set():
            t0 = time.monotonic()
            try:
                if kept is not None:
                    r = kept.post(self.path, content=self.body)
                else:
                    with httpx.Client(base_url=self.url, timeout=60) as c:
                        r = c.post(self.path, content=self.body, headers={"connection": "close"})
                code: int | str = r.status_code
            except httpx.TransportError as exc:
                code = type(exc).__name__
            self.results.append((t0, time.monotonic() - t0, code))
        if kept is not None:
            kept.close()

    def start(self) -> Load:
        self._workers = [threading.Thread(target=self._run) for _ in range(self.threads)]
        for w in self._workers:
            w.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for w in self._workers:
            w.join(timeout=120)
