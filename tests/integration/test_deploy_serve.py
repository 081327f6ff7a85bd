"""Canary on the local backend with two real ``pairflow serve`` processes (no stand-ins).

A real MLflow server holds two versions of a tiny CLIP: v1 (stable) as a plain Hugging Face
directory, v2 (candidate) in the registry's pyfunc layout (``MLmodel`` naming the shipping
variant, ``artifacts/hf``). The local backend starts ``pairflow serve --model
models:/NAME/VERSION`` for each, waits on their readiness endpoint, replays held-out pairs
through the router and runs the canary to a decision. Checked for real: the replayer's
request format is what serve accepts (no client or upstream failure), serve's pair scores
reach the analysis, and each process's ``/metrics`` counts exactly the requests the router
sent it, under the MLflow version number as ``model_version``.
"""

from __future__ import annotations

import shutil
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from tests.fixtures_mlflow import register_gated_versions

from pairflow.config import PairflowConfig
from pairflow.demo.synthetic import GenerateSummary

pytestmark = pytest.mark.slow


def _register(tracking_uri: str, clip_dir: Path, tmp_path: Path) -> tuple[str, str]:
    pyfunc = tmp_path / "pyfunc"
    shutil.copytree(clip_dir, pyfunc / "artifacts" / "hf")
    conf = {"variant": "fp32_torch", "kind": "torch"}
    (pyfunc / "MLmodel").write_text(
        yaml.safe_dump({"flavors": {"python_function": {"config": conf}}})
    )

    def logger(local: Path) -> Callable[[Any, str], None]:
        return lambda client, run_id: client.log_artifacts(run_id, str(local), "model")

    stable, candidate = register_gated_versions(
        tracking_uri, "serve-canary", [logger(clip_dir), logger(pyfunc)]
    )
    return stable, candidate


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{"):
            head, value = line.rsplit(" ", 1)
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
    return total


class _Scraping:
    """The real local backend, plus a /metrics scrape of each predictor before it stops."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = inner.name
        self.scraped: dict[str, str] = {}
        self.records: list[Any] = []

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)

    def close(self) -> None:
        self.records = self.inner.router.records()
        for role, proc in self.inner.processes.items():
            with urllib.request.urlopen(proc.url + "/metrics", timeout=10) as resp:
                self.scraped[role] = resp.read().decode()
        self.inner.close()


def test_canary_between_two_real_predictors(
    mlflow_server: str,
    small_dataset: GenerateSummary,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pairflow.models.scratch import save_untrained_clip
    from pairflow.stages.deploy.run import default_backend, run_deploy

    monkeypatch.setenv("PAIRFLOW_CACHE", str(tmp_path / "cache"))  # the predictors download here
    captions = [str(c) for c in pd.read_parquet(small_dataset.manifest)["caption"]]
    clip_dir = save_untrained_clip(tmp_path / "clip", captions, seed=4)
    _, cand_uri = _register(mlflow_server, clip_dir, tmp_path)

    cfg = PairflowConfig()
    cfg.mlflow.tracking_uri = mlflow_server
    cfg.run.workdir = str(tmp_path)
    d = cfg.deploy
    d.local.startup_timeout_s = 120
    d.steps = [50, 100]
    d.bake_s = 2.0
    d.check_interval_s = 1.0
    d.min_requests = 20
    d.analysis.warmup_s = 0.3
    d.replay.rate_per_s = 30
    d.replay.concurrency = 4
    cfg.data.split.holdout_fraction = 0.3
    # minimum effects a test-sized window (tens of requests per arm) has the power to detect
    d.analysis.min_error_rate_increase = 0.2
    d.analysis.min_latency_exceedance = 0.4
    d.analysis.min_quality_drop = 0.35
    d.analysis.min_latency_increase_ms = 50.0
    wrapped: list[_Scraping] = []

    def factory(rollout: Any, c: PairflowConfig, manifest: str, work: Path) -> Any:
        wrapped.append(_Scraping(default_backend(rollout, c, manifest, work)))
        return wrapped[0]

    out = run_deploy(
        cfg, str(small_dataset.manifest), cand_uri, tmp_path / "logs", backend_factory=factory
    )
    m = out.metrics
    # identical weights: the canary must pass on real traffic, not time out on thin data
    assert out.decision == "promoted", (out.reasons, m.get("steps"))
    step = m["steps"][0]
    assert step["verdict"] == "pass" and step["weight"] == 50
    assert min(step["stable"]["requests"], step["candidate"]["requests"]) >= 20
    assert m["client"]["failed"] == 0 and m["client"]["sent"] >= 40, m["client"]

    backend = wrapped[0]
    records = backend.records
    assert records and all(r.ok for r in records), "serve refused the replayer's requests"
    assert all(r.score is not None and -1.0 <= r.score <= 1.0 for r in records)
    assert all(r.answer is not None and r.reference is not None for r in records)
    assert step["quality"]["compared"] >= 10  # the same requests answered by both models
    for role, version in (("stable", "1"), ("candidate", "2")):
        text = backend.scraped[role]
        labels = {"model_name": "pairflow", "model_version": version}
        sent = sum(1 for r in records if r.backend == role)
        # stable also answered the router's shadow requests (once per key the candidate got)
        served = _metric(text, "pairflow_predictor_requests_total", **labels)
        assert sent <= served <= sent + len(backend.inner.router.stable_answers()), role
        assert _metric(text, "pairflow_predictor_errors_total", **labels) == 0
        # one score per caption of each ranking request (a shadow cut off at close has none)
        k = cfg.deploy.replay.candidates
        pairs = _metric(text, "pairflow_predictor_pair_score_count", **labels)
        assert sent * k <= pairs <= served * k and pairs % k == 0
        assert sent <= _metric(text, "pairflow_predictor_latency_seconds_count", **labels)
    assert 'variant="fp32_torch"' in backend.scraped["candidate"]  # the registry's variant
