"""Evaluate a real trained classifier artifact: the component's KFP outputs and the CLI.

The classifier is a tiny CLIP whose ``concat`` fusion head is fitted (frozen towers, cached
tower outputs) on the training rows, then saved with ``pairflow.models.trained.save_trained``
exactly as the train stage saves one. A "worse" candidate is the same artifact saved with its
labels rotated: every prediction names the wrong class, so its accuracy is known to drop.
Expected metrics are recomputed here independently (``load_trained`` + pandas crosstab).
The champion lives in a real MLflow server; the CLI runs as a real subprocess.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from kfp import dsl
from mlflow import MlflowClient

from pairflow.components.evaluate import evaluate
from pairflow.config import load_config
from pairflow.data.split import split_holdout
from pairflow.demo.synthetic import generate_dataset
from pairflow.drift.reference import read_reference
from pairflow.models.clip import load_clip
from pairflow.models.heads import build_head, tower_outputs
from pairflow.models.scoring import Collate, PairDataset
from pairflow.models.scratch import save_untrained_clip
from pairflow.models.trained import load_trained, save_trained
from pairflow.report import StageReport

pytestmark = pytest.mark.slow
HOLDOUT = 0.3
PAIRFLOW = [sys.executable, "-m", "pairflow.cli"]


def _batch(clip: Any, df: pd.DataFrame) -> dict[str, torch.Tensor]:
    ds = PairDataset(df["image"].tolist(), df["caption"].tolist())
    b = Collate(clip.processor, clip.max_text_length)([ds[i] for i in range(len(df))])
    assert b.pixel_values is not None and b.input_ids is not None
    assert b.attention_mask is not None
    return {
        "pixel_values": b.pixel_values,
        "input_ids": b.input_ids,
        "attention_mask": b.attention_mask,
    }


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("evaluate-classifier")
    gen = generate_dataset(root / "data", 120, seed=7, defects=False)
    df = pd.read_parquet(gen.manifest)
    df["image"] = [str((gen.manifest.parent / p).resolve()) for p in df["image"]]
    manifest = root / "manifest.parquet"
    df.to_parquet(manifest)
    clip = load_clip(str(save_untrained_clip(root / "base", df["caption"].tolist())), device="cpu")
    labels = sorted(df["label"].unique())
    train, _ = split_holdout(df, HOLDOUT)
    with torch.no_grad():
        feats = {k: v.detach() for k, v in tower_outputs(clip.model, _batch(clip, train)).items()}
    y = torch.tensor([labels.index(v) for v in train["label"]])
    torch.manual_seed(0)
    head = build_head(clip.model, "concat", len(labels))
    optim = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(200):
        loss = F.cross_entropy(head(feats), y)
        optim.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optim.step()
    head.eval()
    good = save_trained(
        root / "good", clip.model, clip.processor, kind="classifier", labels=labels, head=head
    )
    rotated = labels[1:] + labels[:1]
    worse = save_trained(
        root / "worse", clip.model, clip.processor, kind="classifier", labels=rotated, head=head
    )
    return {"root": root, "df": df, "manifest": manifest, "good": good, "worse": worse}


def _expected(model_dir: Path, df: pd.DataFrame) -> tuple[float, pd.DataFrame]:
    """Held-out accuracy and confusion (rows true, columns predicted, artifact label order)."""
    trained = load_trained(model_dir)
    assert trained.labels is not None
    _, holdout = split_holdout(df, HOLDOUT)
    b = _batch(trained.clip, holdout)
    pred = trained.classify(b["pixel_values"], b["input_ids"], b["attention_mask"]).argmax(1)
    names = pd.Categorical([trained.labels[i] for i in pred.tolist()], categories=trained.labels)
    truth = pd.Categorical(holdout["label"].tolist(), categories=trained.labels)
    confusion = pd.crosstab(truth, names, dropna=False)
    return float((np.asarray(names) == np.asarray(truth)).mean()), confusion


def _config(root: Path, uri: str, name: str, *extra: str) -> Path:
    cfg = load_config(
        None,
        [
            f"run.workdir={root}",
            f"mlflow.tracking_uri={uri}",
            f"register.model_name={name}",
            f"data.split.holdout_fraction={HOLDOUT}",
            "evaluate.bootstrap_samples=500",
            *extra,
        ],
    )
    path = root / f"config-{uuid.uuid4().hex[:8]}.json"
    path.write_text(cfg.to_json())
    return path


def _component(models: dict[str, Any], cfg: Path, model: Path) -> tuple[bool, dict[str, Any]]:
    out = models["root"] / f"kfp-{uuid.uuid4().hex[:8]}"
    arts: dict[str, Any] = {
        "report": dsl.Artifact(uri=str(out / "report")),
        "summary": dsl.Markdown(uri=str(out / "summary")),
        "metrics": dsl.Metrics(uri=str(out / "metrics")),
        "classification": dsl.ClassificationMetrics(uri=str(out / "classification")),
        "drift": dsl.HTML(uri=str(out / "drift")),
        "reference": dsl.Dataset(uri=str(out / "reference")),
        "serving_reference": dsl.Dataset(uri=str(out / "serving_reference")),
        "plots": dsl.HTML(uri=str(out / "plots")),
    }
    passed = evaluate.python_func(
        config=dsl.Artifact(uri=str(cfg)),
        manifest=dsl.Dataset(uri=str(models["manifest"])),
        model=dsl.Model(uri=str(model)),
        mlflow_run_id="",
        **arts,
    )
    assert isinstance(passed, bool)
    return passed, arts


def _register(uri: str, name: str, model_dir: Path) -> None:
    client = MlflowClient(tracking_uri=uri)
    run = client.create_run(client.create_experiment(f"champ-{uuid.uuid4().hex[:8]}"))
    client.log_artifacts(run.info.run_id, str(model_dir), "model")
    client.set_terminated(run.info.run_id)
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(name, "champion", mv.version)


def test_component_outputs_for_a_classifier_then_blocks_a_worse_one(
    models: dict[str, Any], mlflow_server: str
) -> None:
    name = f"cls-{uuid.uuid4().hex[:8]}"
    cfg = _config(models["root"], mlflow_server, name)
    accuracy, confusion = _expected(models["good"], models["df"])
    assert accuracy > 0.5  # the fitted head learned something: the rotated one must do worse

    passed, arts = _component(models, cfg, models["good"])
    assert passed  # first run, default floors
    rep = StageReport.read(Path(arts["report"].path))
    m = rep.metrics
    assert rep.rows_in == rep.rows_out == len(models["df"]) and rep.rows_rejected == 0
    assert m["kind"] == "classifier" and m["classes"] == list(confusion.index)
    assert m["evaluated_rows"] == int(confusion.to_numpy().sum())
    assert m["candidate"]["accuracy"] == pytest.approx(accuracy)
    # macro-F1 from the independent confusion matrix
    c = confusion.to_numpy().astype(float)
    tp, pred_n, true_n = np.diag(c), c.sum(0), c.sum(1)
    prec = np.divide(tp, pred_n, out=np.zeros_like(tp), where=pred_n > 0)
    rec = np.divide(tp, true_n, out=np.zeros_like(tp), where=true_n > 0)
    f1 = np.divide(2 * prec * rec, prec + rec, out=np.zeros_like(tp), where=(prec + rec) > 0)
    present = (pred_n + true_n) > 0
    assert m["candidate"]["macro_f1"] == pytest.approx(f1[present].mean())
    assert 0.0 <= m["candidate"]["ece"] <= 1.0

    cm = arts["classification"].metadata["confusionMatrix"]
    assert [s["displayName"] for s in cm["annotationSpecs"]] == list(confusion.index)
    assert [r["row"] for r in cm["rows"]] == confusion.to_numpy().tolist()
    scalars = arts["metrics"].metadata
    assert scalars["candidate.accuracy"] == pytest.approx(accuracy)
    assert scalars["gate_passed"] == 1.0
    assert "first run" in Path(arts["drift"].path).read_text()
    assert "gate **PASSED**" in Path(arts["summary"].path).read_text()
    serving = read_reference(arts["serving_reference"].path)  # the monitor's reference
    assert serving.has_embeddings and len(serving.frame) > 0
    assert arts["serving_reference"].metadata["role"] == "serving"

    # the good classifier becomes the champion (loaded back from MLflow); the rotated one loses
    _register(mlflow_server, name, models["good"])
    worse_acc, _ = _expected(models["worse"], models["df"])
    blocked, arts = _component(models, cfg, models["worse"])
    assert not blocked
    m = StageReport.read(Path(arts["report"].path)).metrics
    assert m["champion"]["version"] == "1"
    d = m["deltas"]["accuracy"]
    assert d["candidate"] == pytest.approx(worse_acc)
    assert d["champion"] == pytest.approx(accuracy)  # champion columns realigned to labels
    assert d["high"] < 0
    assert any(r.startswith("FAIL inferior accuracy") for r in m["gate"]["reasons"])
    assert arts["metrics"].metadata["gate_passed"] == 0.0
    assert "gate **FAILED**" in Path(arts["summary"].path).read_text()
    page = Path(arts["plots"].path).read_text()  # the KFP HTML artifact of the plots
    assert "Deltas against the champion" in page and "Confusion matrix of the champion" in page


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PAIRFLOW, "evaluate", *args], capture_output=True, text=True, timeout=300, check=False
    )


def test_cli_outputs_and_exit_codes(models: dict[str, Any], tmp_path: Path) -> None:
    common = [
        "--input",
        str(models["manifest"]),
        "--champion",
        str(models["good"]),
        "--set",
        f"run.workdir={tmp_path}",
        "--set",
        f"data.split.holdout_fraction={HOLDOUT}",
        "--set",
        "evaluate.bootstrap_samples=500",
    ]
    equal = _cli(*common, "--model", str(models["good"]), "--out", str(tmp_path / "eq"))
    assert equal.returncode == 0, equal.stdout + equal.stderr
    assert "gate PASSED" in equal.stdout
    out = tmp_path / "eq"
    for f in ("report.json", "drift.html", "summary.md"):
        assert (out / f).is_file(), f
    # a model stage: no pass-through manifests
    assert not (out / "kept.parquet").exists() and not (out / "rejected.parquet").exists()
    page = (out / "plots.html").read_text()
    assert "Confusion matrix of the candidate (classifier)" in page
    assert "Confusion matrix of the champion (classifier)" in page
    rep = json.loads((out / "report.json").read_text())
    assert rep["rows_in"] == rep["rows_out"] == len(pd.read_parquet(models["manifest"]))
    assert rep["rows_rejected"] == 0
    assert rep["metrics"]["champion"]["uri"] == str(models["good"])
    assert rep["metrics"]["deltas"]["accuracy"]["delta"] == 0.0

    worse = _cli(*common, "--model", str(models["worse"]), "--out", str(tmp_path / "bad"))
    assert worse.returncode == 1, worse.stdout + worse.stderr
    assert "gate BLOCKED" in worse.stdout and "FAIL inferior accuracy" in worse.stdout
    rep = json.loads((tmp_path / "bad" / "report.json").read_text())
    assert rep["metrics"]["gate"]["passed"] is False

    missing = tmp_path / "nope.parquet"
    bad = _cli("--input", str(missing), "--model", str(models["good"]), "--out", str(tmp_path))
    assert bad.returncode == 2 and str(missing) in bad.stderr and "Traceback" not in bad.stderr
    no_model = tmp_path / "no-model"
    bad = _cli(*common, "--model", str(no_model), "--out", str(tmp_path / "x"))
    assert bad.returncode == 2 and str(no_model) in bad.stderr, bad.stderr
