"""The stage report contract: rows in = rows out + rows rejected, or the stage fails."""

from __future__ import annotations

from pathlib import Path

import pytest

from pairflow.errors import ConservationError, InputDataError
from pairflow.report import StageReport, merge_reports
from pairflow.sharding import select_shard, shard_of


def test_conservation_is_enforced_on_write(tmp_path: Path) -> None:
    bad = StageReport(stage="validate", rows_in=10, rows_out=7, rejected={"corrupt": 2})
    with pytest.raises(ConservationError, match="rows_in=10 != rows_out=7 \\+ rejected=2"):
        bad.write(tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_round_trip_and_merge(tmp_path: Path) -> None:
    a = StageReport(stage="validate", rows_in=10, rows_out=7, rejected={"corrupt": 3}, shard=0)
    b = StageReport(
        stage="validate",
        rows_in=5,
        rows_out=4,
        rejected={"corrupt": 1, "x": 0},
        shard=1,
        implemented=False,
    )
    a.write(tmp_path / "a.json")
    assert StageReport.read(tmp_path / "a.json") == a
    merged = merge_reports("validate", [a, b])
    assert (merged.rows_in, merged.rows_out, merged.rejected) == (15, 11, {"corrupt": 4, "x": 0})
    assert merged.implemented is False
    assert merged.metrics["shards"] == 2


def test_read_refuses_tampered_or_broken_reports(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    path.write_text('{"stage": "x", "rows_in": 3, "rows_out": 1, "rejected": {}}')
    with pytest.raises(ConservationError):
        StageReport.read(path)
    path.write_text("{not json")
    with pytest.raises(InputDataError, match="not a readable stage report"):
        StageReport.read(path)


def test_shards_partition_rows_stably() -> None:
    import pandas as pd

    df = pd.DataFrame({"id": [f"row-{i}" for i in range(500)]})
    parts = [select_shard(df, s, 4) for s in range(4)]
    assert sum(len(p) for p in parts) == 500
    assert set().union(*(set(p["id"]) for p in parts)) == set(df["id"])
    assert all(len(p) > 80 for p in parts)  # roughly balanced
    assert shard_of("row-1", 4) == shard_of("row-1", 4)
    with pytest.raises(ValueError, match="out of range"):
        select_shard(df, 4, 4)


def test_sqlite_artifacts_live_beside_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.tracking import MlflowClient

    from pairflow.config import load_config
    from pairflow.tracking import ensure_experiment, resolve_tracking_uri, start_pipeline_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = resolve_tracking_uri("", tmp_path / "work")
    assert uri == f"sqlite:///{tmp_path / 'work' / 'mlflow.db'}"
    cfg = load_config(None, [f"mlflow.tracking_uri={uri}"])
    run_id = start_pipeline_run(cfg, "kfp-1", "run one")
    assert start_pipeline_run(cfg, "kfp-1", "run one") == run_id  # found, not duplicated
    exp_id = ensure_experiment(uri, cfg.mlflow.experiment)
    location = MlflowClient(uri).get_experiment(exp_id).artifact_location
    assert location.startswith((tmp_path / "work" / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()
    assert list((tmp_path / "work" / "mlartifacts").rglob("config.json"))
