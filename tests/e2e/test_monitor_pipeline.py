"""The compiled ``monitor`` package: its parameters, the same platform config as ``retrain``,
and a run of the committed YAML through kfp.local that submits a retrain the in-cluster way
(the version the retrain schedule pins, a ServiceAccount token file) to the fake KFP API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.monitor_fixtures import END, log_window, register_champion

from pairflow.compile import compile_monitor
from pairflow.config import PairflowConfig, load_config
from pairflow.kubeflow.monitor_params import IN_CLUSTER_KFP_HOST, param_values
from pairflow.kubeflow.publish import Endpoint, run_parameters, schedule
from pairflow.kubeflow.version import CompiledPackage

REPO = Path(__file__).resolve().parents[2]
COMPILED = REPO / "pipelines" / "compiled"
RUNNER = Path(__file__).with_name("package_runner.py")


def _docs(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    spec, platform = list(yaml.safe_load_all(path.read_text()))
    return spec, platform


def _executor_platform(platform: dict[str, Any]) -> list[dict[str, Any]]:
    execs = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    return list(execs.values())


def test_monitor_package_parameters_and_platform_match_retrain() -> None:
    spec, platform = _docs(COMPILED / "monitor.yaml")
    assert spec["pipelineInfo"]["name"] == "monitor"
    declared = spec["root"]["inputDefinitions"]["parameters"]
    defaults = param_values(PairflowConfig())
    assert set(declared) == set(defaults)
    assert declared["kfp_host"]["defaultValue"] == IN_CLUSTER_KFP_HOST
    assert declared["dry_run"]["parameterType"] == "BOOLEAN"
    assert declared["monitor_min_window_rows"]["parameterType"] == "NUMBER_INTEGER"
    assert declared["monitor_cooldown_hours"]["parameterType"] == "NUMBER_DOUBLE"
    (task,) = spec["root"]["dag"]["tasks"].values()
    assert task["cachingOptions"].get("enableCache", False) is False
    (monitor_exec,) = _executor_platform(platform)
    assert monitor_exec["podMetadata"]["labels"] == {"access-ml-pipeline": "true"}
    # the same env from the same ConfigMap and Secrets as every retrain step
    _, retrain_platform = _docs(COMPILED / "retrain.yaml")
    for retrain_exec in _executor_platform(retrain_platform):
        assert retrain_exec["configMapAsEnv"] == monitor_exec["configMapAsEnv"]
        assert retrain_exec["secretAsEnv"] == monitor_exec["secretAsEnv"]
    (executor,) = spec["deploymentSpec"]["executors"].values()
    retrain_spec, _ = _docs(COMPILED / "retrain.yaml")
    images = {e["container"]["image"] for e in retrain_spec["deploymentSpec"]["executors"].values()}
    assert images == {executor["container"]["image"]}


def test_monitor_image_comes_from_config(tmp_path: Path) -> None:
    cfg = load_config(None, ["kubeflow.base_image=registry.example/rt@sha256:abc"])
    spec, _ = _docs(compile_monitor(cfg, tmp_path / "m.yaml"))
    (executor,) = spec["deploymentSpec"]["executors"].values()
    assert executor["container"]["image"] == "registry.example/rt@sha256:abc"


@pytest.mark.slow
def test_committed_monitor_package_runs_and_submits_the_pinned_retrain(
    kfp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = kfp_server("sa-token")
    fake.multi_user = True
    ns = "kubeflow-user-example-com"
    token = tmp_path / "token"
    token.write_text("sa-token\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    monkeypatch.delenv("KFP_TOKEN", raising=False)
    # the release workflow has scheduled the retrain pipeline at this version
    cfg = load_config(None, [f"kubeflow.namespace={ns}"])
    retrain = CompiledPackage.load(COMPILED / "retrain.yaml")
    ref, _ = schedule(cfg, Endpoint(fake.url, "KFP_TOKEN"), retrain,
                      run_parameters(cfg, [], retrain), "sha-release",
                      experiment="pairflow", name="pairflow-retrain", cron="0 3 * * *")  # fmt: skip
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    register_champion(tracking, tmp_path, "pairflow-clip")  # register.model_name's default
    prefix = tmp_path / "log"
    log_window(prefix, 80, shifted=True)
    args = {
        "mlflow_tracking_uri": tracking,
        "monitor_log_prefix": str(prefix),
        "monitor_min_window_rows": 50,
        "monitor_window_hours": 2.0,
        "kubeflow_namespace": ns,
        "window_end": END.isoformat(),
        "kfp_host": fake.url,
    }
    env = {**os.environ, "HOME": str(tmp_path), "KF_PIPELINES_SA_TOKEN_PATH": str(token)}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(
        [sys.executable, str(RUNNER), str(COMPILED / "monitor.yaml"), str(tmp_path / "kfp"),
         json.dumps(args)],
        capture_output=True, text=True, env=env, timeout=600, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-12000:] + proc.stderr[-3000:]
    assert fake.violations == []
    (run,) = fake.runs.values()
    assert run["pipeline_version_reference"]["pipeline_version_id"] == ref.version_id
    assert fake.experiments[run["experiment_id"]]["namespace"] == ns
    params = run["runtime_config"]["parameters"]
    assert params["data_source"].startswith(str(prefix / "retrain" / "pairflow-clip-v1-"))
    assert run["display_name"].startswith("retrain monitor pairflow-clip/1/")
    decisions = list((tmp_path / "kfp" / "runs").rglob("decision"))
    assert len(decisions) == 1
    doc = json.loads(decisions[0].read_text())
    assert doc["decision"]["outcome"] == "trigger"
    assert doc["submitted"]["run_id"] == run["run_id"]
    assert doc["snapshot"]["rows"] == 90
