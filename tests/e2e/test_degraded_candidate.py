"""A deliberately degraded candidate fails the evaluate gate and never reaches deploy.

The training rows' captions are shuffled among themselves (a fine-tune on mismatched pairs);
the held-out rows, which evaluate scores, keep their true captions (the split is by id hash,
so it is the same split the pipeline draws). The pipeline trains exactly as the end-to-end
test does, so the only difference is the corrupted supervision. The gate's floor above
chance must fail it, and the ``gate-passed`` branch (compress, register, deploy) must not run:
no model version exists afterwards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pairflow.config import load_config
from pairflow.data.split import split_holdout
from pairflow.demo.synthetic import GenerateSummary
from pairflow.local_run import run_pipeline_locally

pytestmark = pytest.mark.slow

HOLDOUT = 0.2


def _shuffled_manifest(dataset: GenerateSummary, out: Path) -> Path:
    frame = pd.read_parquet(dataset.manifest)
    base = Path(dataset.manifest).parent
    frame["image"] = [
        str(p) if Path(p).is_absolute() else str((base / p).resolve()) for p in frame["image"]
    ]
    _, held = split_holdout(frame, HOLDOUT)
    train_idx = np.flatnonzero(~frame["id"].isin(held["id"]).to_numpy())
    captions = frame["caption"].to_numpy(copy=True)
    # a derangement: every training row gets another training row's caption
    rolled = np.roll(train_idx, 1)
    captions[train_idx] = frame["caption"].to_numpy()[rolled]
    frame["caption"] = captions
    assert (
        frame.loc[train_idx, "caption"].to_numpy()
        != pd.read_parquet(dataset.manifest).loc[train_idx, "caption"].to_numpy()
    ).mean() > 0.8
    path = out / "shuffled.parquet"
    frame.to_parquet(path)
    return path


def test_shuffled_caption_fine_tune_fails_the_gate_and_is_never_deployed(
    tmp_path: Path, small_dataset: GenerateSummary, mlflow_server: str, untrained_clip: Path
) -> None:
    manifest = _shuffled_manifest(small_dataset, tmp_path)
    cfg = load_config(
        None,
        [
            f"run.workdir={tmp_path / 'run'}",
            f"data.source={manifest}",
            f"mlflow.tracking_uri={mlflow_server}",
            "mlflow.experiment=e2e-degraded",
            f"clip_filter.model={untrained_clip}",
            "clip_filter.top_fraction=0.9",
            "train.batch_size=8",
            f"data.split.holdout_fraction={HOLDOUT}",
            "register.model_name=e2e-degraded",
        ],
    )
    result = run_pipeline_locally(cfg)
    assert result.succeeded, result.error  # a failed gate is a decision, not a crash
    gate = result.reports["evaluate"].metrics["gate"]
    assert gate["passed"] is False and gate["enforced"] is True
    floor = next(c for c in gate["checks"] if c["check"] == "floor")
    assert floor["metric"] == "i2t_recall_at_1" and floor["passed"] is False
    assert floor["chance"] == pytest.approx(1 / floor["n"])
    assert any(r.startswith("FAIL i2t_recall_at_1") for r in gate["reasons"])
    # the gate-passed branch never ran: nothing compressed, registered or deployed
    assert not {"compress", "register", "deploy"} & set(result.reports)
    client = MlflowClient(tracking_uri=mlflow_server)
    assert client.search_model_versions("name='e2e-degraded'") == []
