"""A triggered retrain with no KFP host runs through kfp.local, like ``pairflow run``, on the
logged window merged with the champion's training snapshot, and completes."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from pairflow.config import load_config
from pairflow.demo.synthetic import GenerateSummary, generate_dataset
from pairflow.local_run import run_pipeline_locally
from pairflow.serve.requestlog.records import to_table
from pairflow.stages.monitor.run import act_on_verdict
from pairflow.stages.monitor.trigger_record import (
    TAG_RETRAIN_RUN,
    TAG_RETRAIN_STATE,
    TAG_SUBMIT_STATE,
)
from pairflow.stages.monitor.verdict import WindowId, WindowVerdict

pytestmark = pytest.mark.slow
END = datetime(2026, 12, 6, 12, tzinfo=UTC)


class _Champion:
    model_name = "e2e-monitor-clip"
    version = "1"

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id


def _served(tmp_path: Path) -> Any:
    """A shifted source's pairs, logged as the sink stores them (image bytes under images/)."""
    shifted = generate_dataset(tmp_path / "shifted", 40, seed=23, defects=False, shift=True)
    frame = pd.read_parquet(shifted.manifest)
    rows = []
    for i, row in enumerate(frame.itertuples()):
        path = (tmp_path / "shifted" / str(row.image)).resolve()
        rows.append(
            {
                "request_id": f"req{i}",
                "instance": 0,
                "ts": END - timedelta(minutes=i + 1),
                "model_name": _Champion.model_name,
                "model_version": "1",
                "task": "score",
                "image_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                "image_uri": str(path),
                "caption": str(row.caption),
                "score": 0.1,
            }
        )
    return to_table(rows, dim=4)


def test_triggered_retrain_runs_locally_and_completes(
    tmp_path: Path, small_dataset: GenerateSummary, mlflow_server: str, untrained_clip: Path
) -> None:
    from mlflow.tracking import MlflowClient

    from pairflow import tracking
    from pairflow.registry.client import Registry
    from pairflow.stages.register import lineage

    cfg = load_config(
        None,
        [
            f"run.workdir={tmp_path / 'work'}",
            f"mlflow.tracking_uri={mlflow_server}",
            "mlflow.experiment=e2e-monitor-retrain",
            f"monitor.experiment=e2e-monitor-{tmp_path.name}",
            f"monitor.log_prefix={tmp_path / 'log'}",
            "monitor.min_window_rows=20",
            f"clip_filter.model={untrained_clip}",
            "clip_filter.top_fraction=0.9",
            f"data.ground_truth={small_dataset.ground_truth}",  # cleared for the triggered run
            "train.batch_size=8",
            "train.epochs=1",
            "register.model_name=e2e-monitor-clip",
            "evaluate.min_recall_at_1=0.0",  # plumbing test: see test_local_pipeline.py
            "evaluate.require_above_chance=false",
        ],
    )
    client = MlflowClient(tracking_uri=mlflow_server)
    champion_run = client.create_run(client.create_experiment(f"champ-{tmp_path.name}"))
    previous = pd.read_parquet(small_dataset.manifest)
    lineage.log_datasets(
        Registry(mlflow_server),
        champion_run.info.run_id,
        {"training": (previous, "train")},
        source=str(small_dataset.manifest),
    )
    window = WindowId(
        (END - timedelta(hours=24)).isoformat(), END.isoformat(), _Champion.model_name, "1"
    )
    verdict = WindowVerdict(
        window, rows=40, reference_rows=80, judged=True, drift=True, drift_share=1.0
    )
    exp = tracking.ensure_experiment(mlflow_server, cfg.monitor.experiment)
    monitor_run = client.create_run(
        exp, tags={"pairflow.window_key": window.key, "pairflow.monitor.model_name": "x"}
    ).info.run_id

    out = act_on_verdict(
        cfg,
        verdict,
        _served(tmp_path),
        _Champion(champion_run.info.run_id),
        monitor_run,
        dry_run=False,
        target=None,
        local_runner=run_pipeline_locally,
    )
    assert out.decision.triggered
    snap, sub, result = out.snapshot, out.submitted, out.local_result
    assert snap is not None and sub is not None and result is not None
    assert result.succeeded, result.error
    assert (sub.backend, sub.state) == ("local", "SUCCEEDED")
    # the run read exactly the snapshot: 40 logged pairs + the champion's 80 rows
    assert snap.rows == 40 + small_dataset.rows == result.reports["ingest"].rows_in
    assert (
        result.reports["register"]
        .metrics["registered_version"]
        .startswith("models:/e2e-monitor-clip/")
    )
    assert "deploy" in result.reports
    assert "roc_auc" not in result.reports["clip_filter"].metrics or (
        result.reports["clip_filter"].metrics["roc_auc"] is None
    )  # no ground truth describes logged rows
    tags = client.get_run(monitor_run).data.tags
    assert tags[TAG_SUBMIT_STATE] == "submitted" and tags[TAG_RETRAIN_STATE] == "SUCCEEDED"
    assert result.run_dir is not None and tags[TAG_RETRAIN_RUN] == result.run_dir.name
