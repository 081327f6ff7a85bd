"""The monitor against a real MLflow server: the champion's serving reference found through
its model version, verdicts recorded in ``pairflow-monitor`` runs linked from the version,
and the run of consecutive drift windows read back from the experiment."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pairflow.config import PairflowConfig
from pairflow.drift.reference import build_reference, write_reference
from pairflow.models.embeddings import Embeddings
from pairflow.registry.champion import SERVING_REFERENCE_ARTIFACT
from pairflow.stages.monitor import record
from pairflow.stages.monitor.reference import ChampionReferenceError, load_champion_reference
from pairflow.stages.monitor.verdict import WindowId, WindowVerdict

DIM = 8


def _reference_file(path: Path, n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    rows = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "image": ["x"] * n,
            "caption": [f"a red circle number {i}" for i in range(n)],
        }
    )
    img = rng.normal(0, 1, (n, DIM)).astype(np.float16)
    txt = rng.normal(0, 1, (n, DIM)).astype(np.float16)
    emb = Embeddings(list(rows["id"]), img, txt, rng.random(n).astype(np.float32), {})
    ref = build_reference(rows, emb)
    ref.meta.update(model_digest="d-1", role="serving")
    return write_reference(path, ref)


def _cfg(uri: str, model: str, tmp: Path) -> PairflowConfig:
    cfg = PairflowConfig()
    cfg.mlflow.tracking_uri = uri
    cfg.register_.model_name = model
    cfg.run.workdir = str(tmp)
    cfg.monitor.experiment = f"pairflow-monitor-{model}"
    return cfg


def _version(client: Any, model: str, tmp: Path, with_reference: bool) -> str:
    """A registered version whose run holds (or lacks) the serving reference; aliased champion."""
    exp = client.create_experiment(f"runs-{model}-{uuid.uuid4().hex[:6]}")
    run = client.create_run(exp)
    if with_reference:
        ref = _reference_file(tmp / "serving_reference.parquet")
        client.log_artifact(run.info.run_id, str(ref), SERVING_REFERENCE_ARTIFACT.rsplit("/", 1)[0])
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(model)
    except MlflowException as exc:  # already there: a second version of the same model
        assert exc.error_code == "RESOURCE_ALREADY_EXISTS", exc
    mv = client.create_model_version(model, f"runs:/{run.info.run_id}/model", run.info.run_id)
    client.set_registered_model_alias(model, "champion", mv.version)
    return str(mv.version)


def test_champion_reference_is_found_through_the_champion_alias(
    mlflow_server: str, tmp_path: Path
) -> None:
    model = f"mon-ref-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(tracking_uri=mlflow_server)
    cfg = _cfg(mlflow_server, model, tmp_path)
    with pytest.raises(ChampionReferenceError, match=f"models:/{model}@champion: no registered"):
        load_champion_reference(cfg)
    bare = _version(client, model, tmp_path, with_reference=False)
    with pytest.raises(ChampionReferenceError, match="no serving reference pairflow/serving_ref"):
        load_champion_reference(cfg)
    version = _version(client, model, tmp_path, with_reference=True)
    assert version != bare
    champ = load_champion_reference(cfg)
    assert (champ.model_name, champ.version) == (model, version)
    assert champ.run_id == client.get_model_version(model, version).run_id
    assert champ.reference.meta["role"] == "serving" and champ.reference.meta["dim"] == DIM
    assert champ.reference.image is not None and champ.reference.image.shape == (40, DIM)
    assert champ.reference.frame["id"].tolist() == [f"r{i}" for i in range(40)]


def _verdict(day: int, version: str, drift: bool, judged: bool = True) -> WindowVerdict:
    start, end = f"2026-01-{day:02d}T00:00:00+00:00", f"2026-01-{day + 1:02d}T00:00:00+00:00"
    v = WindowVerdict(WindowId(start, end, "m", version), 300, 40, judged=judged, drift=drift)
    if judged:
        v.drift_share = 2 / 3 if drift else 0.0
        v.embedding_auc = {"image": 0.9 if drift else 0.52, "text": 0.55}
        v.score_mean, v.reference_score_mean, v.score_drop = 0.30, 0.31, 0.01
    v.reasons = ["numbers"]
    return v


def test_verdicts_are_recorded_linked_and_counted(mlflow_server: str, tmp_path: Path) -> None:
    from pairflow.stages.monitor.reference import ChampionReference

    model = f"mon-rec-{uuid.uuid4().hex[:8]}"
    client = MlflowClient(tracking_uri=mlflow_server)
    cfg = _cfg(mlflow_server, model, tmp_path)
    assert record.consecutive_drift_windows(cfg, model) == 0  # no experiment yet
    version = _version(client, model, tmp_path, with_reference=True)
    champ = load_champion_reference(cfg)
    html = tmp_path / "report.html"
    html.write_text("<html><body>drift report</body></html>")
    first = _verdict(1, version, drift=True)
    first.report_html = str(html)
    run_id = record.record_verdict(first, champ, cfg)
    assert first.mlflow_run_id == run_id
    run = client.get_run(run_id)
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == cfg.monitor.experiment
    tags = run.data.tags
    assert tags[record.TAG_WINDOW_KEY] == first.window.key
    assert tags[record.TAG_CHAMPION_VERSION] == version and tags[record.TAG_MODEL] == model
    assert tags[record.TAG_DRIFT] == "true" and tags[record.TAG_JUDGED] == "true"
    assert run.data.metrics["drift_share"] == pytest.approx(2 / 3)
    assert run.data.metrics["embedding_auc_image"] == pytest.approx(0.9)
    assert run.data.metrics["rows"] == 300 and run.data.metrics["score_drop"] == pytest.approx(0.01)
    got = client.download_artifacts(run_id, record.VERDICT_ARTIFACT, str(tmp_path / "dl"))
    assert json.loads(Path(got).read_text())["window"]["start"] == first.window.start
    files = {f.path for f in client.list_artifacts(run_id, record.REPORT_ARTIFACT_DIR)}
    assert f"{record.REPORT_ARTIFACT_DIR}/{record.REPORT_FILE}" in files
    mv = client.get_model_version(model, version)
    assert mv.tags[record.MV_TAG_LAST_RUN] == run_id
    assert mv.tags[record.MV_TAG_LAST_DRIFT] == "true"
    # the same window again updates its run: one run per window
    assert record.record_verdict(_verdict(1, version, drift=True), champ, cfg) == run_id
    assert record.consecutive_drift_windows(cfg, model) == 1
    record.record_verdict(_verdict(2, version, drift=False), champ, cfg)
    assert record.consecutive_drift_windows(cfg, model) == 0  # a calm window resets
    for day in (3, 4):
        record.record_verdict(_verdict(day, version, drift=True), champ, cfg)
    assert record.consecutive_drift_windows(cfg, model) == 2
    skipped = _verdict(5, version, drift=False, judged=False)
    record.record_verdict(skipped, champ, cfg)
    assert record.consecutive_drift_windows(cfg, model) == 2  # a skipped window leaves it
    mv = client.get_model_version(model, version)
    assert mv.tags[record.MV_TAG_LAST_DRIFT] == "skipped"
    assert mv.tags[record.MV_TAG_LAST_WINDOW] == skipped.window.key
    record.record_verdict(_verdict(6, version, drift=True), champ, cfg)
    assert record.consecutive_drift_windows(cfg, model) == 3
    # a new champion starts from zero
    new = ChampionReference(model, str(int(version) + 1), champ.run_id, champ.reference)
    client.create_model_version(model, f"runs:/{champ.run_id}/model", champ.run_id)
    record.record_verdict(_verdict(7, new.version, drift=True), new, cfg)
    assert record.consecutive_drift_windows(cfg, model) == 1
