"""The retrain trigger's guardrails and its KFP request, against the fake KFP API
(``tests/kfp_fake.py``) and a real MLflow server holding the decision history."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pairflow.config import PairflowConfig, load_config
from pairflow.kubeflow.errors import KubeflowError
from pairflow.kubeflow.publish import Endpoint, run_parameters, schedule
from pairflow.kubeflow.version import CompiledPackage
from pairflow.serve.requestlog.records import to_table
from pairflow.stages.monitor.run import act_on_verdict
from pairflow.stages.monitor.trigger import KfpTarget, submit_kfp
from pairflow.stages.monitor.trigger_record import (
    TAG_DECISION,
    TAG_MODEL,
    TAG_REASON,
    TAG_RETRAIN_RUN,
    TAG_SUBMIT_STATE,
    TAG_WINDOW_KEY,
)
from pairflow.stages.monitor.verdict import WindowId, WindowVerdict

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pipelines" / "compiled" / "retrain.yaml"
T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
NS = "kubeflow-user-example-com"


@dataclass(frozen=True)
class _Champion:
    model_name: str
    version: str
    run_id: str


@pytest.fixture(autouse=True)
def _kfp_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KF_PIPELINES_SA_TOKEN_PATH", raising=False)
    monkeypatch.setenv("KFP_TOKEN", "t")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def _cfg(mlflow_server: str, tmp_path: Path, *sets: str) -> PairflowConfig:
    return load_config(
        None,
        [
            f"mlflow.tracking_uri={mlflow_server}",
            f"monitor.experiment=monitor-{tmp_path.name}",
            f"monitor.log_prefix={tmp_path / 'log'}",
            "monitor.retrain_data=window",
            "monitor.min_window_rows=5",
            f"run.workdir={tmp_path / 'work'}",
            "clip_filter.model=s3://models/clip/",
            *sets,
        ],
    )


def _window(i: int, model: str = "clip") -> WindowId:
    end = T0 + timedelta(hours=24 * i)
    start = end - timedelta(hours=24)
    return WindowId(start.isoformat(), end.isoformat(), model, "3")


def _verdict(window: WindowId, rows: int = 8, **kw: Any) -> WindowVerdict:
    base = WindowVerdict(
        window=window,
        rows=rows,
        reference_rows=100,
        judged=True,
        drift=True,
        drift_share=0.75,
        drifted_columns=["width"],
        embedding_auc={"image": 0.97},
        score_mean=0.2,
        reference_score_mean=0.22,
        score_drop=0.02,
    )
    return replace(base, **kw)


def _records(tmp_path: Path, n: int = 8) -> Any:
    from PIL import Image

    images = tmp_path / "log" / "images"
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = images / f"{i:064x}.png"
        Image.new("RGB", (32, 32), (200, 20 * i, 120)).save(path)
        rows.append(
            {
                "request_id": f"req{i}",
                "instance": 0,
                "ts": T0 - timedelta(hours=1),
                "model_name": "clip",
                "model_version": "3",
                "task": "score",
                "image_sha256": f"{i:064x}",
                "image_uri": str(path),
                "caption": f"{i + 1} pink stars",
                "score": 0.2,
            }
        )
    return to_table(rows, dim=4)


def _monitor_run(cfg: PairflowConfig, verdict: WindowVerdict) -> str:
    """The window's run, as the drift monitor's record_verdict leaves it."""
    from mlflow.tracking import MlflowClient

    from pairflow import tracking

    uri = cfg.mlflow.tracking_uri
    exp = tracking.ensure_experiment(uri, cfg.monitor.experiment)
    tags = {TAG_WINDOW_KEY: verdict.window.key, TAG_MODEL: verdict.window.model_name}
    return str(MlflowClient(tracking_uri=uri).create_run(exp, tags=tags).info.run_id)


def _tags(cfg: PairflowConfig, run_id: str) -> dict[str, str]:
    from mlflow.tracking import MlflowClient

    tags = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri).get_run(run_id).data.tags
    return dict(tags)


def _act(
    cfg: PairflowConfig,
    verdict: WindowVerdict,
    records: Any,
    target: KfpTarget | None,
    now: datetime,
    dry_run: bool = False,
) -> tuple[Any, str]:
    run_id = _monitor_run(cfg, verdict)
    champion = _Champion(verdict.window.model_name, "3", "unused-with-window-only")
    out = act_on_verdict(
        cfg, verdict, records, champion, run_id, dry_run=dry_run, target=target, now=now
    )
    return out, run_id


def _posts(fake: Any) -> list[tuple[str, str, dict[str, list[str]]]]:
    return [r for r in fake.requests if r[:2] == ("POST", "/apis/v2beta1/runs")]


def test_trigger_request_carries_the_version_and_parameters_then_guardrails_hold(
    kfp_server: Any, mlflow_server: str, tmp_path: Path
) -> None:
    fake = kfp_server("t")
    cfg = _cfg(mlflow_server, tmp_path)
    pkg = CompiledPackage.load(PACKAGE)
    target = KfpTarget(Endpoint(fake.url, "KFP_TOKEN"), package=pkg, version="abc123def456")
    records = _records(tmp_path)

    first, run1 = _act(cfg, _verdict(_window(0)), records, target, T0)
    assert first.decision.triggered and first.submitted is not None
    assert fake.violations == []
    (run,) = fake.runs.values()
    (version,) = [v for v in fake.versions.values() if v["display_name"] == "abc123def456"]
    assert run["pipeline_version_reference"] == {
        "pipeline_id": version["pipeline_id"],
        "pipeline_version_id": version["pipeline_version_id"],
    }
    params = run["runtime_config"]["parameters"]
    snapshot = first.snapshot
    assert snapshot is not None and snapshot.rows == 8
    assert params["data_source"] == snapshot.uri
    assert snapshot.uri.endswith(
        "/log/retrain/clip-v3-20261205T120000Z-20261206T120000Z/manifest.parquet"
    )
    assert params["data_format"] == "parquet"
    assert params["mlflow_tracking_uri"] == mlflow_server
    assert params["clip_filter_model"] == "s3://models/clip/"
    # every other parameter is what `pairflow submit` sends for the same config
    expected = run_parameters(cfg, [], pkg)
    same = {k: v for k, v in params.items() if k not in ("data_source", "data_format")}
    assert same == {k: v for k, v in expected.items() if k in same}
    assert set(params) == set(expected)
    assert run["display_name"] == f"retrain monitor {_window(0).key}"
    assert run["service_account"] == "pairflow-pipeline"
    assert fake.experiments[run["experiment_id"]]["display_name"] == "pairflow"
    tags = _tags(cfg, run1)
    assert tags[TAG_DECISION] == "trigger" and tags[TAG_SUBMIT_STATE] == "submitted"
    assert tags[TAG_RETRAIN_RUN] == run["run_id"]

    # idempotent: the same window again submits nothing
    again, run2 = _act(cfg, _verdict(_window(0)), records, target, T0 + timedelta(hours=30))
    assert again.decision.reason == "already_submitted" and again.submitted is None
    assert run["run_id"] in again.decision.message
    assert _tags(cfg, run2)[TAG_REASON] == "already_submitted"

    # cooldown: the next window, 23 h after the trigger, is blocked
    posts = len(_posts(fake))
    blocked, run3 = _act(cfg, _verdict(_window(1)), records, target, T0 + timedelta(hours=23))
    assert blocked.decision.reason == "cooldown"
    assert "next allowed 2026-12-07T12:00:00+00:00" in blocked.decision.message
    assert _tags(cfg, run3)[TAG_DECISION] == "skip"
    assert len(_posts(fake)) == posts and len(fake.runs) == 1

    # ... and allowed once the cooldown has passed
    later, _ = _act(cfg, _verdict(_window(2)), records, target, T0 + timedelta(hours=25))
    assert later.decision.triggered and len(fake.runs) == 2
    assert fake.violations == []


def test_small_window_and_dry_run_record_the_decision_and_call_no_api(
    kfp_server: Any, mlflow_server: str, tmp_path: Path
) -> None:
    fake = kfp_server("t")
    cfg = _cfg(mlflow_server, tmp_path)
    target = KfpTarget(Endpoint(fake.url, "KFP_TOKEN"), CompiledPackage.load(PACKAGE), "v1")
    records = _records(tmp_path, 3)
    small = _verdict(_window(0), rows=3, judged=False, reasons=["too small"])
    out, run_id = _act(cfg, small, records, target, T0)
    assert out.decision.message == "window_too_small: 3 < 5 rows"
    tags = _tags(cfg, run_id)
    assert (tags[TAG_DECISION], tags[TAG_REASON]) == ("skip", "window_too_small")

    dry, run_id = _act(cfg, _verdict(_window(0)), _records(tmp_path), target, T0, dry_run=True)
    assert dry.decision.reason == "dry_run" and dry.submitted is None and dry.snapshot is None
    assert "would trigger on drift" in _tags(cfg, run_id)["pairflow.monitor.message"]
    assert fake.requests == []
    # a dry run is no submission: the window can still trigger for real
    real, _ = _act(cfg, _verdict(_window(0)), _records(tmp_path), target, T0)
    assert real.decision.triggered and len(fake.runs) == 1


def test_a_run_already_on_kfp_for_the_window_is_found_not_duplicated(
    kfp_server: Any, mlflow_server: str, tmp_path: Path
) -> None:
    """A crash between the KFP call and the MLflow record: the retry finds the run by name."""
    fake = kfp_server("t")
    cfg = _cfg(mlflow_server, tmp_path)
    target = KfpTarget(Endpoint(fake.url, "KFP_TOKEN"), CompiledPackage.load(PACKAGE), "v1")
    key = _window(0).key
    first = submit_kfp(cfg, target, "s3://b/m.parquet", key)
    second = submit_kfp(cfg, target, "s3://b/m.parquet", key)
    assert not first.reused and second.reused and second.run_id == first.run_id
    assert len(fake.runs) == 1 and fake.violations == []
    other = submit_kfp(cfg, target, "s3://b/m.parquet", _window(1).key)
    assert other.run_id != first.run_id and len(fake.runs) == 2


def test_multi_user_cluster_monitor_runs_the_scheduled_retrain_version(
    kfp_server: Any, mlflow_server: str, tmp_path: Path
) -> None:
    """In a profile namespace, with no package (a pod has no checkout): the version the
    retrain recurring run is pinned to."""
    fake = kfp_server("t")
    fake.multi_user = True
    cfg = _cfg(mlflow_server, tmp_path, f"kubeflow.namespace={NS}")
    pkg = CompiledPackage.load(PACKAGE)
    endpoint = Endpoint(fake.url, "KFP_TOKEN")
    ref, _ = schedule(cfg, endpoint, pkg, run_parameters(cfg, [], pkg), "sha-prod",
                      experiment="pairflow", name="pairflow-retrain", cron="0 3 * * *")  # fmt: skip
    out, _ = _act(cfg, _verdict(_window(0)), _records(tmp_path), KfpTarget(endpoint), T0)
    assert out.submitted is not None and out.submitted.pipeline_version == "sha-prod"
    (run,) = fake.runs.values()
    assert run["pipeline_version_reference"]["pipeline_version_id"] == ref.version_id
    assert fake.experiments[run["experiment_id"]]["namespace"] == NS
    assert run["runtime_config"]["parameters"]["data_source"] == out.snapshot.uri
    assert fake.violations == []


def test_a_failed_submission_is_recorded_and_does_not_hold_the_window(
    kfp_server: Any, mlflow_server: str, tmp_path: Path
) -> None:
    fake = kfp_server("t")
    cfg = _cfg(mlflow_server, tmp_path)
    endpoint = Endpoint(fake.url, "KFP_TOKEN")
    records = _records(tmp_path)
    with pytest.raises(KubeflowError, match="no recurring run 'pairflow-retrain'"):
        _act(cfg, _verdict(_window(0)), records, KfpTarget(endpoint), T0)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server)
    exp = client.get_experiment_by_name(cfg.monitor.experiment)
    assert exp is not None
    (failed,) = client.search_runs([exp.experiment_id])
    assert failed.data.tags[TAG_SUBMIT_STATE] == "failed"
    assert "no recurring run" in failed.data.tags["pairflow.monitor.submit_error"]
    assert fake.runs == {}
    target = KfpTarget(endpoint, CompiledPackage.load(PACKAGE), "v1")
    retry, _ = _act(cfg, _verdict(_window(0)), records, target, T0 + timedelta(minutes=5))
    assert retry.decision.triggered and len(fake.runs) == 1


def _cli(*args: str, env: dict[str, str]) -> Any:
    import os
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "pairflow.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO,
        timeout=120,
        check=False,
    )


def test_schedule_monitor_pipeline_creates_its_own_recurring_run(
    kfp_server: Any, tmp_path: Path
) -> None:
    fake = kfp_server("t")
    env = {"KFP_TOKEN": "t", "HOME": str(tmp_path), "GITHUB_SHA": "ab" * 20}
    proc = _cli("schedule", "--pipeline", "monitor", "--host", fake.url,
                "--set", "monitor.cooldown_hours=12", "--set", "monitor.log_prefix=s3://b/log",
                env=env)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (rr,) = fake.recurring.values()
    assert rr["display_name"] == "pairflow-monitor"
    assert rr["trigger"]["cron_schedule"]["cron"] == "0 30 * * * *"
    version = fake.versions[rr["pipeline_version_reference"]["pipeline_version_id"]]
    assert fake.pipelines[version["pipeline_id"]]["display_name"] == "monitor"
    assert version["display_name"] == "ab" * 6
    params = rr["runtime_config"]["parameters"]
    assert params["monitor_cooldown_hours"] == 12.0
    assert params["monitor_log_prefix"] == "s3://b/log"
    assert params["kfp_host"] == "http://ml-pipeline.kubeflow:8888"
    assert params["dry_run"] is False and params["retrain_version"] == ""
    assert fake.violations == []
    # the retrain schedule is a different recurring run of a different pipeline
    proc = _cli("schedule", "--host", fake.url, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(r["display_name"] for r in fake.recurring.values()) == [
        "pairflow-monitor",
        "pairflow-retrain",
    ]
    bad = _cli("schedule", "--pipeline", "monitor", "--host", fake.url,
               "--set", "train.epochs=3", env=env)  # fmt: skip
    assert bad.returncode == 2 and "not a parameter of the monitor pipeline" in bad.stderr
