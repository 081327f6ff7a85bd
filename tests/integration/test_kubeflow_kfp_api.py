"""``pairflow submit|schedule|promote-pipeline`` against a fake KFP REST API.

The fake (:class:`tests.kfp_fake.FakeKfp`, fixture ``kfp_server``) implements the v2beta1
endpoints ``kfp.Client`` 2.17 calls, checked against kubeflow/pipelines
``backend/api/v2beta1/``; its docstring lists the upstream files. The real ``kfp.Client`` and
the real CLI run unchanged.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.kfp_fake import FakeKfp

from pairflow.config import load_config
from pairflow.kubeflow import client as kfp_ops
from pairflow.kubeflow.auth import connect
from pairflow.kubeflow.errors import KfpAuthError, KubeflowError, PackageError
from pairflow.kubeflow.publish import Endpoint, promote, run_parameters, schedule, submit
from pairflow.kubeflow.version import CompiledPackage, spec_digest

REPO = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
_IR_TYPES = {int: "NUMBER_INTEGER", float: "NUMBER_DOUBLE", bool: "BOOLEAN", str: "STRING"}


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("KFP_TOKEN", "KFP_FROM_TOKEN", "KFP_TO_TOKEN", "KF_PIPELINES_SA_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GITHUB_SHA", SHA)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.config/kfp/context.json


def _package(tmp_path: Path, tag: str = "a") -> CompiledPackage:
    """A small IR package whose parameters are real pipeline parameters of the config."""
    from pairflow.config import pipeline_params

    wanted = ("train_epochs", "train_learning_rate", "data_source", "deploy_enabled")
    params = {
        p.name: {"parameterType": _IR_TYPES[p.type], "defaultValue": p.default}
        for p in pipeline_params()
        if p.name in wanted
    }
    assert set(params) == set(wanted)
    spec = {
        "pipelineInfo": {"name": "retrain", "description": f"test package {tag}"},
        "root": {"inputDefinitions": {"parameters": params}, "dag": {"tasks": {}}},
        "components": {},
        "deploymentSpec": {"executors": {}},
        "schemaVersion": "2.1.0",
        "sdkVersion": "kfp-2.17.0",
    }
    path = tmp_path / f"retrain-{tag}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return CompiledPackage.load(path)


def _cli(
    *args: str, env: dict[str, str], cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pairflow.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=cwd,
        timeout=120,
        check=False,
    )


# ---------------------------------------------------------------------------------------------
# submit


def test_submit_uploads_sha_version_and_runs_with_config_and_set_params(
    kfp_server: Any, tmp_path: Path
) -> None:
    fake = kfp_server("dev-token")
    pkg = _package(tmp_path)
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("data:\n  source: s3://bucket/pairs/\ntrain:\n  learning_rate: 0.001\n")
    env = {"KFP_TOKEN": "dev-token", "GITHUB_SHA": SHA, "HOME": str(tmp_path)}
    proc = _cli(
        "submit", "--host", fake.url, "--experiment", "smoke", "--config", str(cfg_file),
        "--set", "train.epochs=3", "--package", str(pkg.path), "--wait", "--poll", "0.05",
        env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert fake.violations == []
    assert [p["display_name"] for p in fake.pipelines.values()] == ["retrain"]
    names = sorted(v["display_name"] for v in fake.versions.values())
    assert names == sorted(["retrain", SHA[:12]])  # KFP's first version + the sha version
    (run,) = fake.runs.values()
    assert fake.experiments[run["experiment_id"]]["display_name"] == "smoke"
    pinned = fake.versions[run["pipeline_version_reference"]["pipeline_version_id"]]
    assert pinned["display_name"] == SHA[:12]
    params = run["runtime_config"]["parameters"]
    assert params["train_epochs"] == 3
    assert params["train_learning_rate"] == 0.001
    assert params["data_source"] == "s3://bucket/pairs/"
    assert params["deploy_enabled"] is True
    assert run["service_account"] == "pairflow-pipeline"
    assert run["state"] == "SUCCEEDED"  # --wait followed it to the end
    assert "SUCCEEDED" in proc.stdout


def test_submit_wait_on_failed_run_exits_nonzero_naming_the_task(
    kfp_server: Any, tmp_path: Path
) -> None:
    fake = kfp_server("t")
    fake.final_state = "FAILED"
    pkg = _package(tmp_path)
    proc = _cli(
        "submit", "--host", fake.url, "--package", str(pkg.path), "--wait", "--poll", "0.05",
        env={"KFP_TOKEN": "t", "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED" in proc.stdout and "train" in proc.stdout
    assert fake.violations == []


def test_submit_without_credentials_is_a_one_line_error(kfp_server: Any, tmp_path: Path) -> None:
    fake = kfp_server("t")
    pkg = _package(tmp_path)
    env = {"HOME": str(tmp_path), "KF_PIPELINES_SA_TOKEN_PATH": str(tmp_path / "no-token")}
    proc = _cli("submit", "--host", fake.url, "--package", str(pkg.path), env=env)
    assert proc.returncode == 2
    assert "KFP_TOKEN" in proc.stderr and "Traceback" not in proc.stderr
    assert fake.requests == []


def test_submit_rejects_a_set_key_that_is_not_a_pipeline_parameter(
    kfp_server: Any, tmp_path: Path
) -> None:
    fake = kfp_server("t")
    pkg = _package(tmp_path)
    env = {"KFP_TOKEN": "t", "HOME": str(tmp_path)}
    proc = _cli(
        "submit", "--host", fake.url, "--package", str(pkg.path),
        "--set", "clip_filter.num_workers=4", env=env,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "clip_filter.num_workers" in proc.stderr and "not a pipeline parameter" in proc.stderr
    # A UI parameter the (stale) package lacks is named too.
    proc = _cli(
        "submit", "--host", fake.url, "--package", str(pkg.path),
        "--set", "train.batch_size=8", env=env,
    )  # fmt: skip
    assert proc.returncode == 2 and "train_batch_size" in proc.stderr
    assert fake.requests == []


def test_wrong_token_is_rejected_by_the_api(
    kfp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = kfp_server("right")
    pkg = _package(tmp_path)
    cfg = load_config(None, ["kubeflow.token_env=MY_TOKEN"])
    monkeypatch.setenv("MY_TOKEN", "wrong")
    with pytest.raises(KubeflowError, match="401"):
        submit(cfg, Endpoint(fake.url, "MY_TOKEN"), pkg, {}, "v1", experiment="e")
    assert fake.pipelines == {}


def test_in_cluster_serviceaccount_token_file_is_sent(
    kfp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = kfp_server("sa-token")
    token = tmp_path / "token"
    token.write_text("sa-token\n")
    monkeypatch.setenv("KF_PIPELINES_SA_TOKEN_PATH", str(token))
    client = connect(fake.url, "auto", "KFP_TOKEN")
    assert kfp_ops.experiment_id(client, "pairflow") in fake.experiments
    assert fake.violations == []
    with pytest.raises(KfpAuthError, match="KFP_TOKEN"):
        connect(fake.url, "token", "KFP_TOKEN")


def test_resubmitting_a_sha_reuses_its_version_and_refuses_a_different_spec(
    kfp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = kfp_server("t")
    cfg = load_config()
    endpoint = Endpoint(fake.url, "KFP_TOKEN")
    monkeypatch.setenv("KFP_TOKEN", "t")
    pkg = _package(tmp_path, "a")
    first = submit(cfg, endpoint, pkg, {}, "abc123", experiment="e")
    again = submit(cfg, endpoint, pkg, {}, "abc123", experiment="e")
    assert first.version.created and not again.version.created
    assert first.version.version_id == again.version.version_id
    assert len(fake.runs) == 2
    with pytest.raises(PackageError, match="different spec"):
        submit(cfg, endpoint, _package(tmp_path, "b"), {}, "abc123", experiment="e")
    assert len(fake.runs) == 2


def test_committed_compiled_package_round_trips_through_the_api(
    kfp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real compiled YAML uploads, and its digest survives the server's Struct encoding."""
    fake = kfp_server("t")
    monkeypatch.setenv("KFP_TOKEN", "t")
    pkg = CompiledPackage.load(REPO / "pipelines" / "compiled" / "retrain.yaml")
    client = connect(fake.url, "token", "KFP_TOKEN")
    ref = kfp_ops.ensure_version(client, pkg, "retrain", "v1")
    _, spec = kfp_ops.lookup_version(client, "retrain", "v1")
    assert json.dumps(spec, sort_keys=True) != json.dumps(pkg.spec, sort_keys=True)  # 3 → 3.0
    assert spec_digest(spec) == pkg.digest  # the digest does not care
    assert ref.created and fake.violations == []


# ---------------------------------------------------------------------------------------------
# schedule and promote


def test_schedule_creates_keeps_then_repoints_the_recurring_run(
    kfp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = kfp_server("t")
    monkeypatch.setenv("KFP_TOKEN", "t")
    cfg = load_config()
    endpoint = Endpoint(fake.url, "KFP_TOKEN")
    pkg = _package(tmp_path)
    params = run_parameters(cfg, [], pkg)
    kwargs: dict[str, Any] = {"experiment": "pairflow", "name": "nightly", "cron": "30 2 * * *"}
    v1, first = schedule(cfg, endpoint, pkg, params, "sha1", **kwargs)
    assert first.action == "created"
    (rr,) = fake.recurring.values()
    assert rr["trigger"]["cron_schedule"]["cron"] == "0 30 2 * * *"
    assert rr["pipeline_version_reference"]["pipeline_version_id"] == v1.version_id
    _, same = schedule(cfg, endpoint, pkg, params, "sha1", **kwargs)
    assert same.action == "unchanged" and same.recurring_run_id == first.recurring_run_id
    v2, moved = schedule(cfg, endpoint, pkg, params, "sha2", **kwargs)
    assert moved.action == "updated" and moved.replaced == [first.recurring_run_id]
    (rr,) = fake.recurring.values()
    assert rr["pipeline_version_reference"]["pipeline_version_id"] == v2.version_id
    assert fake.violations == []
    with pytest.raises(KubeflowError, match="cron"):
        schedule(cfg, endpoint, pkg, params, "sha2", **{**kwargs, "cron": "every night"})


@pytest.mark.slow
def test_promote_pipeline_copies_the_tested_version_and_repoints_prod(
    kfp_server: Any, tmp_path: Path
) -> None:
    dev, prod = kfp_server("dev-token"), kfp_server("prod-token")
    pkg = _package(tmp_path)
    env = {"HOME": str(tmp_path), "KFP_FROM_TOKEN": "dev-token", "KFP_TO_TOKEN": "prod-token"}
    promote_args = ("promote-pipeline", "--from", dev.url, "--to", prod.url,
                    "--package", str(pkg.path), "--cron", "0 0 4 * * *")  # fmt: skip

    # Nothing ran on dev yet: promotion refuses.
    proc = _cli(*promote_args, env=env)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    dev_env = {"HOME": str(tmp_path), "KFP_TOKEN": "dev-token"}
    dev.final_state = "FAILED"
    assert _cli("submit", "--host", dev.url, "--package", str(pkg.path), "--wait",
                "--poll", "0.05", env=dev_env).returncode == 1  # fmt: skip
    proc = _cli(*promote_args, env=env)
    assert proc.returncode == 2 and "no SUCCEEDED run" in proc.stderr
    assert prod.requests == []

    dev.final_state = "SUCCEEDED"
    assert _cli("submit", "--host", dev.url, "--package", str(pkg.path), "--wait",
                "--poll", "0.05", env=dev_env).returncode == 0  # fmt: skip
    proc = _cli(*promote_args, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (dev_v,) = [v for v in dev.versions.values() if v["display_name"] == SHA[:12]]
    (prod_v,) = [v for v in prod.versions.values() if v["display_name"] == SHA[:12]]
    assert spec_digest(prod_v["pipeline_spec"]) == spec_digest(dev_v["pipeline_spec"])
    (rr,) = prod.recurring.values()
    assert rr["pipeline_version_reference"]["pipeline_version_id"] == prod_v["pipeline_version_id"]
    assert rr["trigger"]["cron_schedule"]["cron"] == "0 0 4 * * *"
    assert prod.runs == {}  # promotion schedules; it does not start a prod run
    assert dev.violations == [] and prod.violations == []

    # A checkout whose compiled package differs from what dev ran cannot promote it.
    other = _package(tmp_path, "b")
    proc = _cli(*promote_args[:-4], "--package", str(other.path), env=env)
    assert proc.returncode == 2 and "does not hold" in proc.stderr


def test_promote_checks_the_spec_before_touching_the_target(
    kfp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev, prod = kfp_server("d"), kfp_server("p")
    monkeypatch.setenv("KFP_TOKEN", "d")
    cfg = load_config()
    pkg = _package(tmp_path)
    edited = copy.deepcopy(pkg.spec)
    edited["pipelineInfo"]["description"] = "edited"
    assert spec_digest(edited) != pkg.digest
    kfp_ops.ensure_version(connect(dev.url, "token", "KFP_TOKEN"), pkg, "retrain", "v9")
    with pytest.raises(KubeflowError, match="SUCCEEDED"):
        promote(
            cfg, Endpoint(dev.url, "KFP_TOKEN"), Endpoint(prod.url, "KFP_TOKEN"), pkg, {}, "v9",
            source_experiment="pairflow", experiment="pairflow", name="n", cron="0 0 1 * * *",
        )  # fmt: skip
    assert prod.requests == []


# ---------------------------------------------------------------------------------------------
# multi-user KFP

NS = "kubeflow-user-example-com"
_NAMESPACED = {("GET", "/apis/v2beta1/pipelines"), ("POST", "/apis/v2beta1/pipelines/upload"),
               ("GET", "/apis/v2beta1/experiments")}  # fmt: skip


def _namespaced_calls(fake: FakeKfp) -> list[tuple[str, str, dict[str, list[str]]]]:
    return [r for r in fake.requests if (r[0], r[1]) in _NAMESPACED]


def test_multi_user_submit_twice_reuses_the_version_in_the_profile_namespace(
    kfp_server: Any, tmp_path: Path
) -> None:
    """The committed package (with its platform spec) through the CLI, twice, in a profile."""
    fake = kfp_server("t")
    fake.multi_user = True
    # A shared pipeline of the same name exists: it must be neither found nor touched.
    fake.pipelines["shared"] = {"pipeline_id": "shared", "display_name": "retrain", "namespace": ""}
    env = {"KFP_TOKEN": "t", "HOME": str(tmp_path), "GITHUB_SHA": SHA}
    args = ("submit", "--host", fake.url, "--namespace", NS, "--experiment", "smoke")
    first = _cli(*args, env=env, cwd=REPO)
    second = _cli(*args, env=env, cwd=REPO)
    assert first.returncode == 0, first.stdout + first.stderr
    assert second.returncode == 0, second.stdout + second.stderr
    assert "uploaded" in first.stdout and "reused" in second.stdout
    assert fake.violations == []
    mine = [p for p in fake.pipelines.values() if p["namespace"] == NS]
    assert len(mine) == 1 and len(fake.pipelines) == 2
    versions = [v for v in fake.versions.values() if v["display_name"] == SHA[:12]]
    assert len(versions) == 1 and versions[0]["pipeline_id"] == mine[0]["pipeline_id"]
    assert set(versions[0]["pipeline_spec"]) == {"pipeline_spec", "platform_spec"}
    (exp,) = fake.experiments.values()
    assert exp["namespace"] == NS
    assert len(fake.runs) == 2
    assert {r["pipeline_version_reference"]["pipeline_version_id"] for r in fake.runs.values()} == {
        versions[0]["pipeline_version_id"]
    }
    # every list and upload that has a namespace field carried the profile namespace
    calls = _namespaced_calls(fake)
    assert {(m, p) for m, p, _ in calls} == _NAMESPACED
    for method, path, query in calls:
        assert query.get("namespace") == [NS], (method, path, query)


def test_multi_user_schedule_and_promote_stay_in_the_namespace(
    kfp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dev, prod = kfp_server("t"), kfp_server("t")
    dev.multi_user = prod.multi_user = True
    monkeypatch.setenv("KFP_TOKEN", "t")
    cfg = load_config(None, [f"kubeflow.namespace={NS}"])
    pkg = CompiledPackage.load(REPO / "pipelines" / "compiled" / "retrain.yaml")
    params = run_parameters(cfg, [], pkg)
    dev_ep, prod_ep = Endpoint(dev.url, "KFP_TOKEN"), Endpoint(prod.url, "KFP_TOKEN")
    ran = submit(cfg, dev_ep, pkg, params, "v1", experiment="smoke", wait=True, poll_s=0.01)
    assert ran.run is not None and ran.run.succeeded
    _, sched = schedule(cfg, dev_ep, pkg, params, "v1", experiment="e", name="n", cron="0 3 * * *")
    assert sched.action == "created"
    result = promote(
        cfg, dev_ep, prod_ep, pkg, params, "v1", source_experiment="smoke",
        experiment="pairflow", name="n", cron="0 0 4 * * *",
    )  # fmt: skip
    assert result.source_run == ran.run_id and result.target.created
    for fake in (dev, prod):
        assert fake.violations == []
        assert {p["namespace"] for p in fake.pipelines.values()} == {NS}
        assert {e["namespace"] for e in fake.experiments.values()} == {NS}
        calls = _namespaced_calls(fake)
        assert calls and all(q.get("namespace") == [NS] for _, _, q in calls)
    (rr,) = prod.recurring.values()
    assert prod.experiments[rr["experiment_id"]]["namespace"] == NS


def test_multi_user_without_a_namespace_fails_before_uploading(
    kfp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = kfp_server("t")
    fake.multi_user = True
    monkeypatch.setenv("KFP_TOKEN", "t")
    with pytest.raises(KubeflowError, match="multi-user KFP: set the profile namespace"):
        submit(load_config(), Endpoint(fake.url, "KFP_TOKEN"), _package(tmp_path), {}, "v1",
               experiment="e")  # fmt: skip
    assert fake.pipelines == {} and fake.experiments == {}
    # the same call against a single-user server needs no namespace
    single = kfp_server("t")
    submit(load_config(), Endpoint(single.url, "KFP_TOKEN"), _package(tmp_path), {}, "v1",
           experiment="e")  # fmt: skip
    assert single.violations == [] and len(single.runs) == 1
