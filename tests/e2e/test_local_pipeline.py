"""The whole retrain DAG through kfp.local (SubprocessRunner) against a real MLflow server."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from pairflow.config import load_config
from pairflow.data.synthetic import GenerateSummary
from pairflow.local_run import run_pipeline_locally
from pairflow.summary import STAGE_ORDER
from pairflow.tracking import find_pipeline_run

pytestmark = pytest.mark.slow


def test_pipeline_runs_end_to_end(
    tmp_path: Path, small_dataset: GenerateSummary, mlflow_server: str
) -> None:
    cfg = load_config(
        None,
        [
            f"run.workdir={tmp_path}",
            f"data.source={small_dataset.manifest}",
            f"mlflow.tracking_uri={mlflow_server}",
            "data.shards=3",
            "mlflow.experiment=e2e-ok",
        ],
    )
    result = run_pipeline_locally(cfg)
    assert result.succeeded, result.error
    assert result.run_dir is not None and result.run_dir.is_dir()

    # every stage reported, in DAG order, and rows flow from one stage to the next
    assert list(result.reports) and set(result.reports) == set(STAGE_ORDER)
    previous_out = None
    for stage in STAGE_ORDER:
        rep = result.reports[stage]
        assert rep.rows_in == rep.rows_out + rep.rows_rejected
        if previous_out is not None:
            assert rep.rows_in == previous_out, stage
        previous_out = rep.rows_out
    assert result.reports["ingest"].rows_in == small_dataset.rows
    assert result.reports["ingest"].implemented is True
    assert result.reports["validate"].metrics["shards"] == 3
    # curate is real: the generator's broken files and duplicates are gone, with reasons
    assert result.reports["validate"].implemented and result.reports["dedupe"].implemented
    assert result.reports["validate"].rejected.get("missing_file", 0) >= 1
    assert result.reports["dedupe"].rejected.get("exact_duplicate", 0) >= 1
    assert result.reports["validate"].metrics["contract"]["passed"] is True
    docs = next(result.run_dir.glob("data-contract*/data_docs"))
    assert "data contract" in docs.read_text().lower()
    # steps that are not built yet say so, and never claim a model
    assert result.reports["train"].implemented is False
    assert result.reports["evaluate"].metrics["gate"]["enforced"] is False

    # the curated manifest holds exactly the rows the last data stage reported
    kept = next(result.run_dir.glob("gather-filtered*/kept"))
    assert len(pd.read_parquet(kept)) == result.reports["clip_filter"].rows_out

    # the MLflow server recorded the run, its stage metrics and the exit handler's status
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("e2e-ok")
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["pairflow.final_state"] == "SUCCEEDED"
    assert run.data.metrics["ingest.rows_in"] == small_dataset.rows
    assert run.data.metrics["validate.rows_out"] == result.reports["validate"].rows_out
    assert run.data.params["data.shards"] == "3"
    assert run.data.tags["pairflow.config_hash"]


def test_failed_step_fails_the_run_and_is_recorded(tmp_path: Path, mlflow_server: str) -> None:
    broken = tmp_path / "broken.parquet"
    pd.DataFrame({"id": ["a"], "caption": ["a red circle"]}).to_parquet(broken)
    cfg = load_config(
        None,
        [
            f"run.workdir={tmp_path / 'w'}",
            f"data.source={broken}",
            f"mlflow.tracking_uri={mlflow_server}",
            "mlflow.experiment=e2e-fail",
        ],
    )
    result = run_pipeline_locally(cfg)
    assert not result.succeeded
    assert "ingest" in result.error
    assert "ingest" not in result.reports  # the failed step wrote no report

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name("e2e-fail")
    assert exp is not None
    (run,) = client.search_runs([exp.experiment_id])
    assert run.info.status == "FAILED"
    assert run.data.tags["pairflow.final_state"] == "FAILED"
    assert (
        find_pipeline_run(mlflow_server, "e2e-fail", run.data.tags["pairflow.kfp_run_id"])
        == run.info.run_id
    )
