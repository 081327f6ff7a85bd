"""Canary on the local backend, for real: a real MLflow server, two predictor *subprocesses*
on 127.0.0.1, the weighted router and the replayer sending held-out pairs.

The predictors are small aiohttp servers started from this file (``python THIS --model URI
--port P``, through the ``deploy.local.command`` setting) whose behaviour per model URI is
set by the test: healthy, 20% errors, slow, worse answers, or exiting mid-step. They
stand in for ``pairflow serve`` so each failure can be injected deterministically. A fake
ranks the request's true caption first (the reference the replayer sends in
``X-Pairflow-Reference``) for a fixed share of request keys (``accuracy``), like a model
that answers the same request the same way every time.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from pairflow.config import PairflowConfig
from pairflow.demo.synthetic import GenerateSummary

FAKE_ENV = "PAIRFLOW_TEST_FAKE_PREDICTORS"
NAME = "canary-test"


# ---------------------------------------------------------------------------------------------
# the fake predictor process


def _serve(model: str, port: int) -> None:
    import asyncio
    import random
    import time

    from aiohttp import web

    spec: dict[str, Any] = json.loads(os.environ[FAKE_ENV]).get(model, {})
    rng = random.Random(port)
    started = time.monotonic()

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"ready": True})

    async def predict(request: web.Request) -> web.Response:
        body = await request.json()
        assert body["task"] == "score" and body["instances"][0]["image"]
        if "die_after_s" in spec and time.monotonic() - started > spec["die_after_s"]:
            os._exit(3)
        await asyncio.sleep(spec.get("delay_ms", 2.0) / 1000)
        if rng.random() < spec.get("error_rate", 0.0):
            return web.json_response({"error": "injected"}, status=500)
        n = len(body["instances"])
        key = request.headers.get("X-Pairflow-Key", "")
        ref = int(request.headers.get("X-Pairflow-Reference", "0"))
        right = random.Random(key).random() < spec.get("accuracy", 0.9)
        top = ref if right else (ref + 1) % n
        scores = [0.9 if i == top else 0.1 * i / n for i in range(n)]
        return web.json_response({"predictions": [{"score": s} for s in scores]})

    app = web.Application()
    app.router.add_get("/v2/models/pairflow/ready", ready)
    app.router.add_post("/v1/models/pairflow:predict", predict)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


# ---------------------------------------------------------------------------------------------
# fixtures


def _register_versions(tracking_uri: str, n: int) -> list[str]:
    from tests.fixtures_mlflow import register_gated_versions  # not at import: runs as a script

    def logger(client: Any, run_id: str) -> None:
        client.log_dict(run_id, {"weights": "none"}, "model/model.json")

    return register_gated_versions(tracking_uri, NAME, [logger] * n)


def _config(tracking_uri: str, tmp_path: Path, **deploy: Any) -> PairflowConfig:
    cfg = PairflowConfig()
    cfg.mlflow.tracking_uri = tracking_uri
    cfg.run.workdir = str(tmp_path)
    d = cfg.deploy
    d.local.command = [sys.executable, __file__, "--model", "{model_uri}", "--port", "{port}"]
    d.local.startup_timeout_s = 60
    d.steps = deploy.get("steps", [50, 100])
    d.bake_s = deploy.get("bake_s", 1.5)
    d.check_interval_s = 0.5
    d.min_requests = 25
    d.analysis.warmup_s = 0.2
    # identical fakes differed by 9 ms p95 on a loaded 2-core machine; "slow" injects +58 ms
    d.analysis.min_latency_increase_ms = 20.0
    # minimum effects a test-sized window (~100 requests per arm) has the power to detect
    d.analysis.min_error_rate_increase = 0.15
    d.analysis.min_latency_exceedance = 0.35
    d.analysis.min_quality_drop = 0.3
    d.replay.rate_per_s = 100
    d.replay.concurrency = 8
    cfg.data.split.holdout_fraction = 0.3
    return cfg


@pytest.fixture()
def versions(mlflow_server: str) -> list[str]:
    return _register_versions(mlflow_server, 2)


def _deploy(
    cfg: PairflowConfig,
    tmp_path: Path,
    dataset: GenerateSummary,
    candidate_uri: str,
    behaviour: dict[str, dict[str, float]],
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    from pairflow.stages.deploy.step import DeployInputs, DeployOutputs, run

    monkeypatch.setenv(FAKE_ENV, json.dumps(behaviour))
    out = DeployOutputs.in_dir(tmp_path / "out")
    rep = run(cfg, DeployInputs(str(dataset.manifest), candidate_uri), out)
    assert rep.rows_in == rep.rows_out and rep.rows_in > 0
    saved = json.loads(out.report.read_text())
    assert saved["metrics"]["decision"] == rep.metrics["decision"]
    return rep.metrics


def _aliases(tracking_uri: str, uri: str) -> tuple[dict[str, str], dict[str, str]]:
    from mlflow.tracking import MlflowClient

    name, version = uri.removeprefix("models:/").split("/")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    model = client.get_registered_model(name)
    return dict(model.aliases), dict(client.get_model_version(name, version).tags)


# ---------------------------------------------------------------------------------------------
# tests


@pytest.mark.slow
def test_good_candidate_is_promoted(
    mlflow_server: str,
    versions: list[str],
    tmp_path: Path,
    small_dataset: GenerateSummary,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stable, cand = versions
    cfg = _config(mlflow_server, tmp_path, steps=[25, 50, 100])
    m = _deploy(cfg, tmp_path, small_dataset, cand, {stable: {}, cand: {}}, monkeypatch)
    assert m["decision"] == "promoted", m["reasons"]
    assert [s["weight"] for s in m["steps"]] == [25, 50]
    for step in m["steps"]:
        assert step["verdict"] == "pass"
        assert min(step["stable"]["requests"], step["candidate"]["requests"]) >= 25
        assert {x["metric"] for x in step["metrics"]} == {"error_rate", "latency_p95", "quality"}
        assert all(x["p_value"] is not None for x in step["metrics"])
    assert m["client"]["failed"] == 0 and m["client"]["sent"] > 100
    aliases, tags = _aliases(mlflow_server, cand)
    assert aliases == {"champion": "2", "previous": "1"}
    assert tags["pairflow.deploy.decision"] == "promoted"
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| 25% | **pass**" in summary and "promoted" in summary
    # the version explains the decision with its numbers (what `pairflow registry show` prints)
    from mlflow.tracking import MlflowClient

    from pairflow.registry.decisions import version_decisions

    name, version = cand.removeprefix("models:/").split("/")
    md = version_decisions(MlflowClient(tracking_uri=mlflow_server), name, version)
    assert "**promoted**" in md
    for weight in ("25%", "50%"):
        assert f"| {weight} | error_rate | fisher_exact_greater |" in md
        assert f"| {weight} | quality | mcnemar_exact_greater |" in md


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ({"error_rate": 0.2}, "error_rate"),
        ({"delay_ms": 60.0}, "latency_p95"),
        ({"accuracy": 0.2}, "quality"),
        ({"die_after_s": 1.0}, "candidate unhealthy"),
    ],
    ids=["errors", "slow", "worse-quality", "dies-mid-step"],
)
def test_bad_candidate_is_rolled_back(
    bad: dict[str, float],
    reason: str,
    mlflow_server: str,
    versions: list[str],
    tmp_path: Path,
    small_dataset: GenerateSummary,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stable, cand = versions
    cfg = _config(mlflow_server, tmp_path, bake_s=2.0)
    m = _deploy(cfg, tmp_path, small_dataset, cand, {stable: {}, cand: bad}, monkeypatch)
    assert m["decision"] == "rolled_back"
    assert any(reason in r for r in m["reasons"]), m["reasons"]
    # failover: no client request failed, even when the candidate erred or died
    assert m["client"]["failed"] == 0, m["client"]
    aliases, tags = _aliases(mlflow_server, cand)
    assert aliases == {"champion": "1"}  # unchanged
    assert tags["pairflow.deploy.decision"] == "rolled_back"
    assert reason in tags["pairflow.deploy.reasons"]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    _serve(args.model, args.port)
