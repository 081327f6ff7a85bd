"""``pairflow monitor`` end to end, as a user runs it: a champion registered in a real MLflow
server with its serving reference and training lineage, a window of logged traffic written
in the sink's layout, the real CLI process, and the fake KFP API (``tests/kfp_fake.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from pairflow.data.schema import write_manifest
from pairflow.evaluate.champion import SERVING_REFERENCE_ARTIFACT
from pairflow.evaluate.reference import Reference, write_reference
from pairflow.monitor.records import to_table
from pairflow.monitor.sink_store import write_parts

REPO = Path(__file__).resolve().parents[2]
END = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
DIM = 8
SHA = "0123456789abcdef0123456789abcdef01234567"


def _unit(rng: np.random.Generator, centre: np.ndarray, n: int) -> np.ndarray:
    m = centre + 0.15 * rng.standard_normal((n, DIM))
    out: np.ndarray = m / np.linalg.norm(m, axis=1, keepdims=True)
    return out


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 48), colour).save(path)
    return path


def _champion(uri: str, tmp_path: Path, name: str) -> None:
    """Version 1 of ``name`` aliased champion: its run holds the serving reference (what
    evaluate + register leave) and the training dataset input (lineage)."""
    from mlflow.tracking import MlflowClient

    from pairflow.holdout import split_holdout
    from pairflow.registry import lineage
    from pairflow.registry.client import Registry

    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame(
        {
            "id": [f"ref{i}" for i in range(n)],
            "caption_chars": rng.integers(14, 20, n).astype("int64"),
            "caption_tokens": np.full(n, 3, dtype="int64"),
            "width": pd.array(np.full(n, 64), dtype="Int64"),
            "height": pd.array(np.full(n, 64), dtype="Int64"),
            "clip_score": rng.normal(0.3, 0.02, n).astype("float32"),
            "label": pd.array(["circle"] * n, dtype="string"),
        }
    )
    centre = np.eye(DIM)[0]
    ref = Reference(
        frame,
        image=_unit(rng, centre, n).astype(np.float16),
        text=_unit(rng, centre, n).astype(np.float16),
        meta={"model_digest": "d", "embedded_ids": n},
    )
    ref_file = write_reference(tmp_path / "ref" / "serving_reference.parquet", ref)
    curated = pd.DataFrame(
        {
            "id": [f"old{i}" for i in range(10)],
            "image": [str(_png(tmp_path / "old" / f"{i}.png", (255, 0, 0))) for i in range(10)],
            "caption": ["a red circle"] * 10,
            "label": ["circle"] * 10,
            "source": ["drop-1"] * 10,
        }
    )
    kept = write_manifest(curated, tmp_path / "run" / "kept")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment(f"retrain-{tmp_path.name}")
    run_id = client.create_run(exp).info.run_id
    client.log_artifact(run_id, str(ref_file), str(Path(SERVING_REFERENCE_ARTIFACT).parent))
    train, hold = split_holdout(curated, 0.2)
    lineage.log_datasets(
        Registry(uri, retries=0),
        run_id,
        {"training": (train, "train"), "evaluation": (hold, "holdout")},
        source=str(kept),
    )
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias(name, "champion", "1")


def _log_window(prefix: Path, n: int, shifted: bool) -> None:
    """``n`` served pairs of v1 in the hour before END, as the sink writes them."""
    rng = np.random.default_rng(1 if shifted else 2)
    centre = np.eye(DIM)[1 if shifted else 0]
    image, text = _unit(rng, centre, n), _unit(rng, centre, n)
    rows = []
    for i in range(n):
        colour = (0, 128, 128) if shifted else (255, 0, 0)
        img = _png(prefix / "images" / f"{i:02d}{int(shifted)}.png", colour)
        caption = f"{i % 4 + 2} teal stars in a row" if shifted else "a red circle"
        rows.append(
            {
                "request_id": f"{'s' if shifted else 'u'}{i}",
                "instance": 0,
                "ts": END - timedelta(minutes=30, seconds=i),
                "model_name": "pairflow",
                "model_version": "1",
                "task": "score",
                "image_sha256": f"{i:02d}{int(shifted)}",
                "image_bytes": 300,
                "image_format": "PNG",
                "width": 48 if shifted else 64,
                "height": 48 if shifted else 64,
                "image_uri": str(img),
                "caption": caption,
                "caption_chars": len(caption),
                "caption_tokens": len(caption.split()),
                "score": float(rng.normal(0.18 if shifted else 0.3, 0.02)),
                "image_emb": image[i],
                "text_emb": text[i],
            }
        )
    write_parts(str(prefix), to_table(rows, DIM))


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
    _champion(mlflow_server, tmp_path, name)
    prefix = tmp_path / "log"
    _log_window(prefix, 80, shifted=True)
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
