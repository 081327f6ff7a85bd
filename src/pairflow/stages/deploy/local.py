"""The ``local`` backend: two predictor processes on 127.0.0.1, a weighted router, a replayer.

:func:`serve_command` is the one place that knows how a predictor is started
(``pairflow serve --model URI --port P``); :class:`PredictorProcess` runs it and waits for
readiness. :class:`LocalBackend` works on any two base URLs, so tests can put small HTTP
servers of their own behind the router.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from pairflow.errors import PairflowError
from pairflow.stages.deploy.counts import WindowCounts
from pairflow.stages.deploy.replay import ReplayStats, pair_request, replay
from pairflow.stages.deploy.router import CANDIDATE, STABLE, WeightedRouter
from pairflow.stages.deploy.settings import DeployConfig
from pairflow.stages.deploy.window import window_counts

log = logging.getLogger("pairflow.stages.deploy.local")

READY_PATH = "/v2/models/pairflow/ready"


class PredictorStartError(PairflowError):
    """A predictor process that exited or never became ready (``role``: stable/candidate)."""

    role = ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_command(model_uri: str, port: int, template: list[str] | None = None) -> list[str]:
    """The command line of one local predictor: ``pairflow serve --model URI --port P``.

    A ``template`` (config ``deploy.local.command``) replaces it, with ``{model_uri}`` and
    ``{port}`` substituted in each argument.
    """
    if template:
        return [a.replace("{model_uri}", model_uri).replace("{port}", str(port)) for a in template]
    script = Path(sys.executable).with_name("pairflow")
    head = [str(script)] if script.exists() else [sys.executable, "-m", "pairflow.cli"]
    return [*head, "serve", "--model", model_uri, "--port", str(port)]


class PredictorProcess:
    """One predictor subprocess; its output goes to ``log_path``."""

    def __init__(
        self,
        command: list[str],
        port: int,
        log_path: Path,
        ready_path: str = READY_PATH,
        env: dict[str, str] | None = None,
    ) -> None:
        self.env = {**os.environ, **(env or {})}
        self.command = command
        self.port = port
        self.log_path = log_path
        self.ready_path = ready_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float) -> PredictorProcess:
        """Spawn the process and wait until it is ready."""
        return self.spawn().wait_ready(timeout_s)

    def spawn(self) -> PredictorProcess:
        """Start the process without waiting (so two predictors load side by side)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as fh:
            self.proc = subprocess.Popen(
                self.command, stdout=fh, stderr=subprocess.STDOUT, env=self.env
            )
        return self

    def wait_ready(self, timeout_s: float) -> PredictorProcess:
        """Poll the readiness path; :class:`PredictorStartError` on exit or timeout."""
        assert self.proc is not None, "spawn() first"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PredictorStartError(
                    f"predictor {' '.join(self.command)} exited {self.proc.returncode}: "
                    f"{self._tail()}"
                )
            if _http_ok(self.url + self.ready_path):
                log.info("predictor ready on %s", self.url)
                return self
            time.sleep(0.25)
        self.stop()
        raise PredictorStartError(
            f"predictor {' '.join(self.command)} not ready after {timeout_s:.0f} s: {self._tail()}"
        )

    def exit_code(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return "<no log>"


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


class LocalBackend:
    """Router + replayer over two predictor URLs (optionally owning their processes)."""

    name = "local"

    def __init__(
        self,
        stable_url: str,
        candidate_url: str,
        pairs: list[dict[str, Any]],
        cfg: DeployConfig,
        *,
        processes: dict[str, PredictorProcess] | None = None,
    ) -> None:
        self.cfg = cfg
        self.pairs = pairs
        self.processes = processes or {}
        self.router = WeightedRouter(
            stable_url,
            candidate_url,
            port=cfg.local.router_port,
            failover=cfg.local.failover,
            timeout_s=cfg.replay.timeout_s,
            shadow=stable_url != candidate_url,  # a smoke bake has no stable to shadow
        )
        self.client = ReplayStats()
        self._next = 0

    def start(self) -> None:
        self.router.start()

    def set_weight(self, percent: int) -> None:
        self.router.set_weight(percent)

    def bake(self, seconds: float) -> None:
        rc = self.cfg.replay
        stats = asyncio.run(
            replay(
                self.router.url,
                self.pairs,
                seconds,
                path=rc.path,
                rate_per_s=rc.rate_per_s,
                concurrency=rc.concurrency,
                timeout_s=rc.timeout_s,
                build=pair_request,
                start_index=self._next,
            )
        )
        self._next += stats.sent
        self.client.add(stats)

    def window(self, start: float, end: float) -> WindowCounts:

        router = self.router
        return window_counts(
            router.records(), STABLE, CANDIDATE, start, end, router.stable_answers()
        )

    def health(self) -> str | None:
        proc = self.processes.get(CANDIDATE)
        code = proc.exit_code() if proc is not None else None
        return None if code is None else f"candidate process exited with code {code}"

    def rollback(self) -> None:
        self.router.set_weight(0)

    def promote(self) -> None:
        self.router.set_weight(100)

    def close(self) -> None:
        try:
            self.router.close()
        finally:
            for proc in self.processes.values():
                proc.stop()

    def describe(self) -> dict[str, object]:
        return {
            "backend": self.name,
            "router": self.router.url,
            "upstreams": dict(self.router.urls),
            "client": {
                "sent": self.client.sent,
                "ok": self.client.ok,
                "failed": self.client.failed,
                "statuses": {str(k): v for k, v in sorted(self.client.statuses.items())},
                "errors": self.client.errors[:5],
            },
        }


def _start_predictors(
    uris: dict[str, str], cfg: DeployConfig, log_dir: Path, env: dict[str, str] | None
) -> dict[str, PredictorProcess]:
    """Start one predictor per role (``serve_command``, loading side by side) and wait until
    each is ready; on failure every started one is stopped and the error names the role."""
    procs: dict[str, PredictorProcess] = {}
    role = next(iter(uris))
    try:
        for role, uri in uris.items():
            port = free_port()
            procs[role] = PredictorProcess(
                serve_command(uri, port, cfg.local.command),
                port,
                log_dir / f"{role}.log",
                cfg.local.ready_path,
                env,
            ).spawn()
        deadline = time.monotonic() + cfg.local.startup_timeout_s
        for role in list(procs):  # ``role`` names the one that failed (except below)
            procs[role].wait_ready(max(1.0, deadline - time.monotonic()))
    except PredictorStartError as exc:
        for proc in procs.values():
            proc.stop()
        err = PredictorStartError(f"{role} {exc}")
        err.role = role
        raise err from exc
    except BaseException:
        for proc in procs.values():
            proc.stop()
        raise
    return procs


def launch_single(
    candidate_uri: str,
    pairs: list[dict[str, Any]],
    cfg: DeployConfig,
    log_dir: Path,
    env: dict[str, str] | None = None,
) -> LocalBackend:
    """The smoke bake's backend: the candidate alone behind the router (no champion yet)."""
    procs = _start_predictors({CANDIDATE: candidate_uri}, cfg, log_dir, env)
    url = procs[CANDIDATE].url
    return LocalBackend(url, url, pairs, cfg, processes=procs)


def launch_local(
    stable_uri: str,
    candidate_uri: str,
    pairs: list[dict[str, Any]],
    cfg: DeployConfig,
    log_dir: Path,
    env: dict[str, str] | None = None,
) -> LocalBackend:
    """Start both predictors and return a backend routing between them."""
    procs = _start_predictors({STABLE: stable_uri, CANDIDATE: candidate_uri}, cfg, log_dir, env)
    return LocalBackend(procs[STABLE].url, procs[CANDIDATE].url, pairs, cfg, processes=procs)
