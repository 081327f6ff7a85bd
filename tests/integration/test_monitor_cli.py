"""``pairflow monitor`` end to end, as a user runs it: a champion registered in a real MLflow
server with its serving reference and training lineage, a window of logged traffic written
in the sink's layout, the real CLI process, and the fake KFP API (``tests/kfp_fake.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tests.monitor_fixtures import END, log_window, register_champion

REPO = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"


def _monitor(*args: str, cfg: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pairflow.cli", "monitor", "--config", str(cfg), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO,
        timeout=300,
        check=False,
    )


@pytest.mark.slow
def test_monitor_cli_triggers_once_on_a_shifted_window_and_records_every_decision(
    kfp_server: Any, mlflow_server: str, tmp_path: Path
) -> None:
    from mlflow.tracking import MlflowClient

    fake = kfp_server("t")
    name = f"clip-{tmp_path.name[-8:]}".replace("_", "-")
    register_champion(mlflow_server, tmp_path, name)
    prefix = tmp_path / "log"
    log_window(prefix, 80, shifted=True)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "\n".join(
            [
                f"mlflow: {{tracking_uri: '{mlflow_server}'}}",
                f"register: {{model_name: '{name}'}}",
                f"run: {{workdir: '{tmp_path / 'work'}'}}",
                "monitor:",
                f"  log_prefix: '{prefix}'",
                f"  experiment: 'monitor-{tmp_path.name}'",
                "  min_window_rows: 50",
                "  window_hours: 2",
                "",
            ]
        )
    )
    env = {"KFP_TOKEN": "t", "HOME": str(tmp_path), "GITHUB_SHA": SHA,
           "KF_PIPELINES_SA_TOKEN_PATH": str(tmp_path / "none")}  # fmt: skip
    end = END.isoformat()

    dry = _monitor("--window-end", end, "--dry-run", "--host", fake.url, cfg=cfg, env=env)
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "decision: skip — dry_run: would trigger on drift" in dry.stdout
    assert fake.requests == []

    first = _monitor("--window-end", end, "--host", fake.url, cfg=cfg, env=env)
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    assert f"window {name}/1/2026-12-06T10:00:00+00:00/2026-12-06T12:00:00+00:00: 80 rows" in out
    assert "decision: trigger — trigger: drift" in out
    assert "image AUC" in out
    # 80 logged pairs, all distinct, + the champion's 10 curated rows (window+previous)
    assert "retrain data: 90 rows = 80 logged pairs + 10 previous (window+previous)" in out
    (run,) = fake.runs.values()
    (version,) = [v for v in fake.versions.values() if v["display_name"] == SHA[:12]]
    assert (
        run["pipeline_version_reference"]["pipeline_version_id"] == version["pipeline_version_id"]
    )
    params = run["runtime_config"]["parameters"]
    slug = f"{name}-v1-20261206T100000Z-20261206T120000Z"
    assert params["data_source"] == str(prefix / "retrain" / slug / "manifest.parquet")
    assert f"retrain run {run['run_id']} started" in out
    merged = pd.read_parquet(params["data_source"])
    assert (merged["source"] == "served").sum() == 80 and (merged["source"] == "drop-1").sum() == 10
    assert fake.violations == []

    again = _monitor("--window-end", end, "--host", fake.url, cfg=cfg, env=env)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"already_submitted: {name}/1/" in again.stdout and run["run_id"] in again.stdout
    assert len(fake.runs) == 1

    # three decisions, one MLflow run per window: the last one's tags win, all were recorded
    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name(f"monitor-{tmp_path.name}")
    assert exp is not None
    (mrun,) = client.search_runs([exp.experiment_id])
    tags = mrun.data.tags
    assert tags["pairflow.monitor.reason"] == "already_submitted"
    assert tags["pairflow.monitor.retrain_run_id"] == run["run_id"]
    assert mrun.data.metrics["monitor.rows"] == 80.0
