"""The kserve backend's analysis on a real Prometheus (Debian package ``prometheus``).

Two predictor processes (stable and candidate, started by the local backend through
``deploy.local.command``) count their requests with pairflow's own predictor metrics
(:mod:`pairflow.serve.metrics`: the same Counter/Histogram objects ``pairflow serve`` exports)
and serve them on ``/metrics``. A real ``prometheus`` scrapes both, each target labelled as the
PodMonitor would label a KServe revision's pod (``namespace``, ``pod``, the Knative revision).
The local router and replayer send the traffic; at every look the controller judges the
window from Prometheus through :class:`KServeBackend` (the kserve backend's queries), and the
local backend's own per-request records of the same window are judged beside it. A good
candidate is promoted and a bad one (errors, slow) rolled back by both, on the same traffic.

The scrape interval is shortened to 1 s for test time; the kserve rule of windows of at least 4
scrapes holds (``deploy.kserve.scrape_interval_s`` = 1, bakes of 6 s).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from pairflow.config import PairflowConfig
from pairflow.demo.synthetic import GenerateSummary

pytestmark = pytest.mark.slow
FAKE_ENV = "PAIRFLOW_TEST_PROM_PREDICTORS"
SCRAPE_S = 1.0


# ---------------------------------------------------------------------------------------------
# the predictor process: scripted behaviour, pairflow's real metric objects on /metrics


def _serve(model: str, port: int) -> None:
    import asyncio
    import random

    from aiohttp import web
    from prometheus_client import generate_latest

    from pairflow.serve.metrics import ModelMetrics

    spec: dict[str, Any] = json.loads(os.environ[FAKE_ENV]).get(model, {})
    metrics = ModelMetrics("pairflow", model.rsplit("/", 1)[1])
    rng = random.Random(port)

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(), content_type="text/plain")

    async def predict(request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        body = await request.json()
        metrics.request("v1")
        await asyncio.sleep(spec.get("delay_ms", 2.0) / 1000)
        if rng.random() < spec.get("error_rate", 0.0):
            metrics.error("v1", "model")
            return web.json_response({"error": "injected"}, status=500)
        metrics.latency("v1", time.perf_counter() - t0)
        n = len(body["instances"])
        return web.json_response({"predictions": [{"score": 0.9 - 0.1 * i} for i in range(n)]})

    app = web.Application()
    app.router.add_get("/v2/models/pairflow/ready", ready)
    app.router.add_get("/metrics", scrape)
    app.router.add_post("/v1/models/pairflow:predict", predict)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ---------------------------------------------------------------------------------------------
# a real Prometheus


def require_prometheus() -> str:
    from tests.manifests_render import require_tool  # not at import: this file runs as a script

    return require_tool("prometheus", "prometheus (Debian)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RealPrometheus:
    """``prometheus`` on 127.0.0.1 scraping the given targets every :data:`SCRAPE_S`."""

    def __init__(self, binary: str, tmp: Path, targets: dict[str, tuple[str, str]]) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        static = [
            {
                "targets": [hostport],
                "labels": {
                    "namespace": "pairflow",
                    "pod": f"{revision}-deployment-0",
                    "serving_knative_dev_revision": revision,
                    "role": role,
                },
            }
            for role, (hostport, revision) in targets.items()
        ]
        conf = {
            "global": {"scrape_interval": f"{SCRAPE_S:g}s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "predictor", "static_configs": static}],
        }
        (tmp / "prometheus.yml").write_text(yaml.safe_dump(conf))
        self.log = (tmp / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={tmp / 'prometheus.yml'}",
             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.targets = len(static)

    def wait_up(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "prometheus exited (see prometheus.log)"
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/query?query=up", timeout=2) as r:
                    result = json.loads(r.read())["data"]["result"]
                if sum(float(s["value"][1]) for s in result) == self.targets:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError("prometheus did not scrape both predictors in time")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


# ---------------------------------------------------------------------------------------------
# the backend under test: local traffic, decisions from Prometheus, local verdicts beside


class PrometheusJudged:
    """The local backend (processes, router, replayer), but ``window`` reads Prometheus
    through the kserve backend; the local records' verdict of each window is kept beside."""

    def __init__(self, local: Any, cfg: PairflowConfig, tmp: Path, rollout: Any) -> None:
        from pairflow.stages.deploy.kserve import KServeBackend, Prometheus

        self.local, self.name = local, "prometheus-judged"
        targets = {
            role: (proc.url.removeprefix("http://"), f"pairflow-predictor-predictor-0000{i}")
            for i, (role, proc) in enumerate(sorted(local.processes.items()), start=1)
        }
        self.prom = RealPrometheus(require_prometheus(), tmp, targets)
        self.prom.wait_up()
        self.kserve = KServeBackend(None, Prometheus(self.prom.url), rollout, cfg.deploy)  # type: ignore[arg-type]
        self.cfg = cfg.deploy
        self.looks: list[tuple[str, str, int, int]] = []

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.local, attr)

    def window(self, start: float, end: float) -> Any:
        from pairflow.stages.deploy.analysis import analyze_step

        time.sleep(SCRAPE_S * 1.5)  # let Prometheus scrape up to ``end``
        prom = self.kserve.window(start, end)
        local = self.local.window(start, end)
        a = analyze_step(prom, self.cfg.analysis, min_requests=self.cfg.min_requests)
        b = analyze_step(local, self.cfg.analysis, min_requests=self.cfg.min_requests)
        self.looks.append((a.verdict.value, b.verdict.value, prom.candidate.requests,
                           local.candidate.requests))  # fmt: skip
        return prom

    def close(self) -> None:
        self.prom.stop()
        self.local.close()


def _config(tracking_uri: str, tmp_path: Path) -> PairflowConfig:
    cfg = PairflowConfig()
    cfg.mlflow.tracking_uri = tracking_uri
    cfg.run.workdir = str(tmp_path)
    d = cfg.deploy
    d.local.command = [sys.executable, __file__, "--model", "{model_uri}", "--port", "{port}"]
    d.local.startup_timeout_s = 60
    d.steps = [50, 100]
    d.bake_s = 6.0
    d.check_interval_s = 2.0
    d.min_requests = 25
    d.analysis.metrics = ["error_rate", "latency_p95"]  # Prometheus holds no answers
    d.analysis.warmup_s = 0.2
    d.analysis.max_extensions = 1
    d.analysis.min_latency_increase_ms = 20.0
    d.analysis.min_error_rate_increase = 0.15
    d.analysis.min_latency_exceedance = 0.35
    d.kserve.scrape_interval_s = SCRAPE_S
    d.replay.rate_per_s = 60
    d.replay.concurrency = 6
    cfg.data.split.holdout_fraction = 0.3
    return cfg


@pytest.mark.parametrize(
    ("behaviour", "decision"),
    [({}, "promoted"), ({"error_rate": 0.3, "delay_ms": 60}, "rolled_back")],
    ids=["good", "bad"],
)
def test_prometheus_analysis_decides_as_the_local_backend(
    behaviour: dict[str, float],
    decision: str,
    mlflow_server: str,
    small_dataset: GenerateSummary,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.fixtures_mlflow import register_gated_versions

    from pairflow.stages.deploy.local import launch_local
    from pairflow.stages.deploy.replay import holdout_pairs
    from pairflow.stages.deploy.run import run_deploy

    require_prometheus()

    def logger(client: Any, run_id: str) -> None:
        client.log_dict(run_id, {"weights": "none"}, "model/model.json")

    stable, cand = register_gated_versions(mlflow_server, "prom-canary", [logger] * 2)
    monkeypatch.setenv(FAKE_ENV, json.dumps({stable: {}, cand: behaviour}))
    cfg = _config(mlflow_server, tmp_path)
    made: list[PrometheusJudged] = []

    def factory(rollout: Any, c: PairflowConfig, manifest: str, work: Path) -> Any:
        pairs = holdout_pairs(manifest, c.data.split, 32)
        local = launch_local(
            rollout.uri(rollout.stable), rollout.uri(rollout.candidate), pairs, c.deploy, work,
            env={"MLFLOW_TRACKING_URI": mlflow_server},
        )  # fmt: skip
        made.append(PrometheusJudged(local, c, tmp_path, rollout))
        return made[-1]

    out = run_deploy(cfg, str(small_dataset.manifest), cand, tmp_path / "work",
                     backend_factory=factory)  # fmt: skip
    assert out.decision == decision, out.reasons
    (judged,) = made
    final_prom, final_local, prom_n, local_n = judged.looks[-1]
    assert final_prom == final_local, judged.looks  # same window, same verdict
    assert prom_n > 0 and abs(prom_n - local_n) <= 0.25 * local_n, judged.looks
    if decision == "promoted":
        assert final_prom == "pass"
    else:
        assert final_prom == "fail"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    _serve(a.model, a.port)
