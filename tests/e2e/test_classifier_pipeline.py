"""``train.model=classifier`` through the whole retrain DAG (kfp.local), canary included.

Two pipeline runs against a real MLflow server, default ``train.world_size`` (2 torchrun
ranks): the first registers and promotes a classifier champion; the second trains a new
classifier and goes through every stage against it:

- evaluate: accuracy, macro-F1, ECE and the confusion matrix, compared with the classifier
  champion (same model kind: the ``model_kind`` check passes, accuracy is compared);
- compress: ONNX export and int8 quantization of the classifier; every int8 variant's and
  the chosen variant's held-out accuracy stays within 1 point of fp32;
- register: the version's pyfunc answers ``labels`` with its fusion head, and a real
  ``pairflow serve`` process on that version answers ``classify`` with a label and
  probabilities over the classes;
- deploy (local backend, default ``deploy.replay.task=auto``): the canary replays held-out
  rows as ``classify`` requests (image + caption) to the stable and candidate predictor
  processes and decides on classification agreement, errors and latency, recording its
  numbers.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pairflow.config import load_config
from pairflow.demo.synthetic import generate_dataset
from pairflow.local_run import LocalRunResult, run_pipeline_locally
from pairflow.models.scratch import save_untrained_clip
from pairflow.stages.train.launch import free_port

# two whole pipeline runs (about 8 min on an idle 2-core machine; more under load)
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3000)]

# minimum effects a test-sized canary window (tens of requests per arm) has the power to detect
CANARY = [
    "deploy.steps=[50,100]",
    "deploy.bake_s=2.0",
    "deploy.check_interval_s=1.0",
    "deploy.min_requests=20",
    "deploy.analysis.warmup_s=0.3",
    "deploy.analysis.min_error_rate_increase=0.2",
    "deploy.analysis.min_latency_exceedance=0.4",
    "deploy.analysis.min_quality_drop=0.35",
    "deploy.analysis.min_latency_increase_ms=50.0",
    "deploy.replay.rate_per_s=30",
    "deploy.local.startup_timeout_s=180",
]


def _run(root: Path, tag: str, data: Path, clip: Path, tracking: str, name: str, seed: int) -> Any:
    cfg = load_config(
        None,
        [
            f"run.workdir={root / tag}",
            f"data.source={data}",
            f"mlflow.tracking_uri={tracking}",
            "mlflow.experiment=e2e-classifier",
            "data.shards=2",
            f"clip_filter.model={clip}",
            "clip_filter.top_fraction=0.95",
            f"run.seed={seed}",
            "train.model=classifier",
            # enough steps for the tiny towers to learn the shape words (~0.9 val accuracy)
            "train.epochs=8",
            "train.learning_rate=2e-3",
            "train.patience=20",
            "train.batch_size=8",
            # ~24 held-out rows: a margin their bootstrap interval can meet
            "evaluate.non_inferiority_margin=0.5",
            f"register.model_name={name}",
            "compress.latency_batch_sizes=[1]",
            "compress.selection_batch_size=1",
            # both runs ship the same architecture, timed at batch 1 (p50 ~0.8 ms): a 10%
            # budget is 80 us, inside timer noise on a shared 2-core machine (a CI run missed
            # it at 0.83 vs 0.82 ms). The budget itself is tested in test_compress_variants
            # and test_compress_units.
            "compress.max_slowdown_vs_champion=0.5",
            *CANARY,
            # the first run only needs to leave a champion behind; the second is canaried
            f"deploy.first_deploy={'promote' if tag == 'first' else 'smoke'}",
        ],
    )
    assert cfg.train.world_size == 2  # the default: distributed
    result: LocalRunResult = run_pipeline_locally(cfg)
    assert result.succeeded, result.error
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mlflow_server: str) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("e2e-classifier")
    gen = generate_dataset(root / "data", 160, seed=23)
    captions = [str(c) for c in pd.read_parquet(gen.manifest)["caption"]]
    clip = save_untrained_clip(root / "clip", captions, seed=0)
    name = f"e2e-classifier-{os.urandom(3).hex()}"
    first = _run(root, "first", gen.manifest, clip, mlflow_server, name, seed=0)
    # another seed: a different classifier of the same kind against the champion
    second = _run(root, "second", gen.manifest, clip, mlflow_server, name, seed=1)
    return {"first": first, "second": second, "name": name, "root": root}


def test_first_run_promotes_a_classifier_champion(runs: dict[str, Any]) -> None:
    reports = runs["first"].reports
    train = reports["train"].metrics
    assert train["world_size"] == 2 and train["bad_steps"] == 0
    assert train["model"] == "classifier"
    ev = reports["evaluate"].metrics
    assert ev["kind"] == "classifier" and ev["gate"]["passed"] is True, ev["gate"]["reasons"]
    assert reports["register"].metrics["registered_version"] == f"models:/{runs['name']}/1"
    dep = reports["deploy"].metrics
    # no champion yet: the candidate is promoted alone (after a smoke bake where configured)
    assert dep["decision"] in ("promoted", "promoted_initial"), dep.get("reasons")


def test_gate_against_a_classifier_champion(runs: dict[str, Any]) -> None:
    result = runs["second"]
    ev = result.reports["evaluate"].metrics
    assert ev["kind"] == "classifier"
    assert ev["champion"] is not None and ev["champion"]["version"] == "1"
    cand, champ = ev["candidate"], ev["champion"]["metrics"]
    for metric in ("accuracy", "macro_f1", "ece"):
        assert 0.0 <= cand[metric] <= 1.0, metric
        assert 0.0 <= champ[metric] <= 1.0, metric
    kind = [c for c in ev["gate"]["checks"] if c["check"] == "model_kind"]
    assert kind == [
        {"check": "model_kind", "candidate": "classifier", "champion": "classifier", "passed": True}
    ]
    # compared with the champion on accuracy, with a bootstrap interval, and decided on it
    assert "accuracy" in ev["deltas"]
    delta = ev["deltas"]["accuracy"]
    assert delta["candidate"] == pytest.approx(cand["accuracy"])
    assert delta["champion"] == pytest.approx(champ["accuracy"])
    assert any("accuracy" in r for r in ev["gate"]["reasons"])
    # the confusion matrix (KFP ClassificationMetrics output): classes x classes counts
    out = json.loads(next(result.run_dir.glob("evaluate*/executor_output.json")).read_text())
    (art,) = out["artifacts"]["classification"]["artifacts"]
    confusion = art["metadata"]["confusionMatrix"]
    assert [a["displayName"] for a in confusion["annotationSpecs"]] == ev["classes"]
    matrix = np.array([r["row"] for r in confusion["rows"]])
    assert matrix.shape == (len(ev["classes"]),) * 2
    assert int(matrix.sum()) == ev["evaluated_rows"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(cand["accuracy"])


def test_compressed_classifier_within_one_point(runs: dict[str, Any]) -> None:
    comp = runs["second"].reports["compress"].metrics
    assert comp["task"] == "classifier"
    variants = comp["variants"]
    fp32 = variants["fp32_torch"]["accuracy"]
    quantized = {name: v for name, v in variants.items() if name.startswith("int8")}
    assert quantized, list(variants)  # exported to ONNX and quantized
    for name, v in quantized.items():
        assert abs(v["accuracy"] - fp32) <= 0.01, (name, v["accuracy"], fp32)
    chosen = variants[comp["chosen"]]
    assert abs(chosen["accuracy"] - fp32) <= 0.01, (comp["chosen"], chosen, fp32)
    assert abs(chosen["accuracy_delta"]) <= 0.01


def _png(path: str) -> str:
    import io

    from PIL import Image

    buf = io.BytesIO()
    with Image.open(path) as img:
        img.convert("RGB").resize((64, 64)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_registered_classifier_answers_classify(
    runs: dict[str, Any], mlflow_server: str, tmp_path: Path
) -> None:
    import mlflow.pyfunc

    uri = runs["second"].reports["register"].metrics["registered_version"]
    labels = runs["second"].reports["evaluate"].metrics["classes"]
    assert len(labels) >= 2
    kept = pd.read_parquet(next(runs["second"].run_dir.glob("gather-filtered*/kept"))).head(4)
    from pairflow.registry.logged_model import tracking_uri

    with tracking_uri(mlflow_server):  # set_tracking_uri would leak into later tests' env
        model = mlflow.pyfunc.load_model(uri)
    frame = pd.DataFrame(
        {"image": [_png(p) for p in kept["image"]], "caption": list(kept["caption"])}
    )
    answer = model.predict(frame, params={"mode": "labels"})
    assert set(answer["label"]) <= set(labels) and len(answer) == len(kept)
    for label, probs in zip(answer["label"], answer["probabilities"], strict=True):
        assert len(probs) == len(labels) and sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert labels[int(np.argmax(probs))] == label

    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_server,
           "PAIRFLOW_CACHE": str(tmp_path / "cache")}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "pairflow.cli", "serve", "--model", uri, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:] if proc.stderr else ""
            try:
                with urllib.request.urlopen(url + "/v2/health/ready", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "serve never became ready"
            time.sleep(0.5)
        row = kept.iloc[0]
        body = json.dumps(
            {
                "task": "classify",
                "instances": [{"image": _png(row["image"]), "caption": str(row["caption"])}],
            }
        ).encode()
        req = urllib.request.Request(
            url + "/v1/models/pairflow:predict",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            served = json.loads(r.read())
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    (pred,) = served["predictions"]
    assert pred["label"] in labels
    probs = pred["probabilities"]
    assert set(probs) == set(labels) and sum(probs.values()) == pytest.approx(1.0, abs=1e-4)
    assert max(probs, key=probs.get) == pred["label"]


def test_canary_decides_on_classification_agreement_and_latency(
    runs: dict[str, Any], mlflow_server: str
) -> None:
    dep = runs["second"].reports["deploy"].metrics
    assert dep["decision"] in ("promoted", "rolled_back"), dep
    assert dep["client"]["failed"] == 0, dep["client"]
    step = dep["steps"][0]
    assert step["verdict"] in ("pass", "fail")
    names = {m["metric"] for m in step["metrics"]}
    assert {"quality", "latency_p95", "error_rate"} <= names
    quality = step["quality"]
    # the same classify requests answered by both models, agreement on the top-1 label
    assert quality["compared"] >= 10 and 0 <= quality["agree"] <= quality["compared"]
    version = MlflowClient(tracking_uri=mlflow_server).get_model_version_by_alias(
        runs["name"], "champion"
    )
    assert version.version == ("2" if dep["decision"] == "promoted" else "1")
