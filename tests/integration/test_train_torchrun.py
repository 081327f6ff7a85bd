"""Training through real torchrun processes, a real MLflow server and a SIGKILL resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file
from typer.testing import CliRunner

from pairflow import tracking
from pairflow.config import load_config
from pairflow.data.schema import read_manifest
from pairflow.data.split import split_holdout
from pairflow.demo.synthetic import generate_dataset
from pairflow.models.clip import ModelLoadError, load_clip
from pairflow.models.pairs import TrainDataError
from pairflow.models.scratch import save_untrained_clip
from pairflow.models.trained import load_trained
from pairflow.report import StageReport
from pairflow.stage_io import load_step_config
from pairflow.stages.train.step import TrainInputs, TrainOutputs, run


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(manifest with absolute image paths, untrained tiny CLIP dir): 240 clean rows."""
    root = tmp_path_factory.mktemp("train-data")
    gen = generate_dataset(root / "data", 240, seed=21, defects=False)
    df = pd.read_parquet(gen.manifest)
    df["image"] = [str((gen.manifest.parent / p).resolve()) for p in df["image"]]
    manifest = root / "curated.parquet"
    df.to_parquet(manifest)
    base = save_untrained_clip(root / "base", list(df["caption"]), seed=0)
    return manifest, base


@pytest.mark.slow
def test_two_rank_clip_training_logs_rank0_metrics_to_mlflow(
    data: tuple[Path, Path], mlflow_server: str, tmp_path: Path
) -> None:
    manifest, base = data
    cfg = load_config(
        None,
        [
            f"run.workdir={tmp_path}",
            f"mlflow.tracking_uri={mlflow_server}",
            f"train.base_model={base}",
            "train.epochs=2",
            "train.batch_size=16",
            "train.world_size=2",
            "mlflow.experiment=train-test",
        ],
    )
    run_id = tracking.start_pipeline_run(cfg, "kfp-train-1", "train test")
    config_path = tmp_path / "config.json"
    config_path.write_text(cfg.to_json())
    out = TrainOutputs(model=tmp_path / "model", report=tmp_path / "out" / "report.json")
    inputs = TrainInputs(str(manifest), mlflow_run_id=run_id, kfp_run_id="kfp-train-1")
    report = run(load_step_config(config_path), inputs, out)

    rows = len(read_manifest(manifest))
    written = StageReport.read(out.report)
    m = written.metrics
    assert written.rows_in == written.rows_out == rows and written.implemented
    assert m["world_size"] == 2 and m["samples_per_s"] > 0 and m["bad_steps"] == 0
    assert m["rows_holdout"] == len(split_holdout(read_manifest(manifest), 0.2)[1])
    assert m["rows_train"] + m["rows_val"] + m["rows_holdout"] == rows
    # each step's global batch is 2 ranks x 16: steps per epoch follow from rows_train
    assert m["steps"] == 2 * ((m["rows_train"] + 1) // 2 // 16)
    assert report.metrics == m

    client = MlflowClient(tracking_uri=mlflow_server)
    loss = client.get_metric_history(run_id, "train.step.loss")
    assert sorted(p.step for p in loss) == list(
        range(1, m["steps"] + 1)
    )  # rank 0 only: once per step
    assert len(client.get_metric_history(run_id, "train.step.samples_per_s")) == m["steps"]
    assert client.get_run(run_id).data.params["train_job.world_size"] == "2"

    trained = load_trained(tmp_path / "model", device="cpu")
    assert trained.kind == "clip" and trained.labels is None
    assert trained.meta["base"]["ref"] == str(base)
    tok = trained.clip.processor.tokenizer(["a red circle"], return_tensors="pt")
    emb = trained.embed_texts(tok["input_ids"], tok["attention_mask"])
    assert emb.shape == (1, trained.clip.embed_dim)
    assert (
        load_clip(str(tmp_path / "model"), device="cpu").digest
        != load_clip(str(base), device="cpu").digest
    )
    assert not (tmp_path / "model.train" / "checkpoints").exists()  # removed after success


@pytest.mark.slow
def test_cli_classifier_cross_attention_with_lora(data: tuple[Path, Path], tmp_path: Path) -> None:
    from pairflow.cli import app

    manifest, base = data
    result = CliRunner().invoke(app, [
        "train", "--input", str(manifest), "--out", str(tmp_path),
        "--set", f"train.base_model={base}", "--set", "train.model=classifier",
        "--set", "train.fusion=cross_attention", "--set", "train.lora_rank=2",
        "--set", "train.balance_classes=true", "--set", "train.world_size=1",
        "--set", "train.epochs=1", "--set", "train.batch_size=16",
        "--set", f"run.workdir={tmp_path}",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    trained = load_trained(tmp_path / "model", device="cpu")
    labels = sorted(set(read_manifest(manifest)["label"]))
    assert trained.kind == "classifier" and trained.labels == labels
    assert trained.meta["fusion"] == {"kind": "cross_attention"}
    proc = trained.clip.processor
    from PIL import Image

    enc = proc(
        text=["a", "b c"],
        images=[Image.new("RGB", (64, 64))] * 2,
        return_tensors="pt",
        padding=True,
    )
    logits = trained.classify(enc["pixel_values"], enc["input_ids"], enc["attention_mask"])
    assert logits.shape == (2, len(labels))
    # LoRA merged at export: a plain CLIP without adapter weights
    assert not any("lora" in k for k in load_file(str(tmp_path / "model" / "model.safetensors")))


def _worker_cmd(cfg_file: Path, manifest: Path, base: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "pairflow.stages.train", "--config", str(cfg_file),
            "--manifest", str(manifest),
            "--base", str(base), "--out", str(out / "model"), "--checkpoint-dir", str(out / "ckpt"),
            "--result", str(out / "result.json")]  # fmt: skip


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted(
    data: tuple[Path, Path], tmp_path: Path
) -> None:
    manifest, base = data
    cfg = load_config(
        None,
        [
            "train.epochs=2",
            "train.batch_size=8",
            "train.checkpoint_every=3",
            "train.num_workers=1",
            "train.patience=5",
        ],
    )
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(cfg.to_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(
        _worker_cmd(cfg_file, manifest, base, full), check=True, env=env, capture_output=True
    )

    proc = subprocess.Popen(
        _worker_cmd(cfg_file, manifest, base, killed),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while not (killed / "ckpt" / "LATEST").exists():
        assert proc.poll() is None and time.monotonic() < deadline, "no checkpoint before exit"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "result.json").exists()
    subprocess.run(
        _worker_cmd(cfg_file, manifest, base, killed), check=True, env=env, capture_output=True
    )

    a = json.loads((full / "result.json").read_text())
    b = json.loads((killed / "result.json").read_text())
    steps_per_epoch = a["steps"] // a["epochs_run"]
    assert (
        b["resumed_from_step"] is not None and b["resumed_from_step"] % steps_per_epoch != 0
    )  # mid-epoch
    assert a["resumed_from_step"] is None
    assert (
        b["history"] == a["history"]
        and b["steps"] == a["steps"]
        and b["best_metric"] == a["best_metric"]
    )
    wa, wb = (
        load_file(str(full / "model" / "model.safetensors")),
        load_file(str(killed / "model" / "model.safetensors")),
    )
    assert all((wa[k] == wb[k]).all() for k in wa)


def test_bad_base_reference_fails_before_reading_data(tmp_path: Path) -> None:
    cfg = load_config(
        None, [f"train.base_model={tmp_path / 'missing-model'}", f"run.workdir={tmp_path}"]
    )
    with pytest.raises(ModelLoadError, match="missing-model: model directory not found"):
        run(
            cfg,
            TrainInputs(str(tmp_path / "no-such-manifest.parquet")),
            TrainOutputs.in_dir(tmp_path),
        )


def test_empty_manifest_is_a_clear_error(data: tuple[Path, Path], tmp_path: Path) -> None:
    manifest, base = data
    empty = tmp_path / "empty.parquet"
    read_manifest(manifest).head(0).to_parquet(empty)
    cfg = load_config(None, [f"train.base_model={base}", f"run.workdir={tmp_path}"])
    with pytest.raises(TrainDataError, match="empty manifest"):
        run(cfg, TrainInputs(str(empty)), TrainOutputs.in_dir(tmp_path))
