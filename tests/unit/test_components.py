"""Components are thin: their python_func runs the library step; kfp.local runs them too."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from kfp import dsl, local
from mlflow.tracking import MlflowClient

from pairflow.components.ingest import ingest
from pairflow.components.resolve_config import resolve_config
from pairflow.config import PairflowConfig, config_from_json
from pairflow.demo.synthetic import GenerateSummary


def _defaults(tmp_path: Path) -> str:
    cfg = PairflowConfig()
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return cfg.to_json()


def test_resolve_config_applies_ui_values(tmp_path: Path, small_dataset: GenerateSummary) -> None:
    out = dsl.Artifact(uri=str(tmp_path / "config"))
    run_file = tmp_path / "mlflow_run_id"
    digest = resolve_config.python_func(
        defaults_json=_defaults(tmp_path),
        params={
            "data_source": str(small_dataset.manifest),
            "data_shards": "3.0",
            "compress_int8": "false",
        },
        kfp_run_id="run-1",
        kfp_run_name="first",
        config=out,
        mlflow_run_id=str(run_file),
    )
    cfg = config_from_json(Path(out.path).read_text())
    assert (cfg.data.shards, cfg.compress.int8) == (3, False)
    assert digest == cfg.digest() == out.metadata["config_hash"]
    # the run id output names the MLflow run that records this KFP run: later steps log to it
    run = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri).get_run(run_file.read_text())
    assert run.data.tags["pairflow.kfp_run_id"] == "run-1"
    assert run.data.tags["pairflow.config_hash"] == digest


def test_ingest_component_writes_manifest_report_and_summary(
    tmp_path: Path, small_dataset: GenerateSummary
) -> None:
    config = tmp_path / "config.json"
    cfg = PairflowConfig()
    cfg.data.source = str(small_dataset.manifest)
    cfg.data.shards = 4
    config.write_text(cfg.to_json())
    arts = {n: dsl.Dataset(uri=str(tmp_path / n)) for n in ("kept", "rejected")}
    report, summary = (
        dsl.Artifact(uri=str(tmp_path / "report")),
        dsl.Markdown(uri=str(tmp_path / "summary")),
    )
    shards = ingest.python_func(
        config=dsl.Artifact(uri=str(config)),
        mlflow_run_id="",
        report=report,
        summary=summary,
        **arts,
    )
    assert shards == [0, 1, 2, 3]
    rep = json.loads(Path(report.path).read_text())
    kept = pd.read_parquet(arts["kept"].path)
    assert rep["rows_in"] == small_dataset.rows == len(kept) + rep["rows_rejected"]
    assert all(Path(p).is_absolute() for p in kept["image"])
    assert arts["kept"].metadata["rows_out"] == len(kept)
    assert "## ingest" in Path(summary.path).read_text()


@pytest.mark.slow
def test_resolve_config_through_kfp_local(tmp_path: Path) -> None:
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "root"))
    task = resolve_config(
        defaults_json=_defaults(tmp_path),
        params={"train_epochs": "4.0"},
        kfp_run_id="local-1",
        kfp_run_name="local",
    )
    cfg = config_from_json(Path(task.outputs["config"].path).read_text())
    assert cfg.train.epochs == 4
    assert task.outputs["Output"] == cfg.digest()
    run = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri).get_run(task.outputs["mlflow_run_id"])
    assert run.data.tags["pairflow.kfp_run_id"] == "local-1"
