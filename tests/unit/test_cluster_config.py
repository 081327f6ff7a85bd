"""Cluster wiring of the committed package: image, kfp-kubernetes platform config, RBAC.

The compiled ``platform_spec`` must name exactly the ConfigMap, Secrets and ServiceAccount that
the rendered manifests (real ``kubectl kustomize``) define or reference; the Role must grant
exactly the rules manifests/README.md lists.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.manifests_render import OVERLAYS, find_object, render_overlay

from pairflow.config import load_config
from pairflow.kubeflow.settings import KubeflowConfig
from pairflow.pipelines.retrain import CONFIG_MAP_ENV, MLFLOW_SECRET_ENV, S3_SECRET_ENV

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "pipelines" / "compiled" / "retrain.yaml"


@pytest.fixture(scope="module")
def package() -> tuple[dict[str, Any], dict[str, Any]]:
    pipeline, platform = yaml.safe_load_all(COMMITTED.read_text())
    return pipeline, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render_overlay(request.param)


def _refs(node: Any, key: str) -> set[str]:
    """Names of every ``secretKeyRef``/``configMapKeyRef``/``secret`` (``key``) in ``node``."""
    found: set[str] = set()
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key and isinstance(v, dict):
                found.add(str(v.get("name") or v.get("secretName")))
            found |= _refs(v, key)
    elif isinstance(node, list):
        for item in node:
            found |= _refs(item, key)
    return found


def test_every_executor_runs_the_versioned_runtime_image(package: Any) -> None:
    pipeline, platform = package
    executors = pipeline["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values()}
    kf = KubeflowConfig()
    assert images == {kf.base_image}
    repo, tag = kf.base_image.rsplit(":", 1)
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert tag == version, "kubeflow.base_image is tagged with the package version"
    release = yaml.safe_load((REPO / ".github/workflows/release.yml").read_text())
    assert release["env"]["RUNTIME_IMAGE"] == repo, "release.yml pushes the image the YAML names"
    # every executor has platform config (none can start without its env)
    assert set(platform) == set(executors)


def test_platform_spec_names_what_the_manifests_define(package: Any, rendered: Any) -> None:
    _, platform = package
    kf = KubeflowConfig()
    cmap = find_object(rendered, "ConfigMap", kf.env_config_map)
    secrets_referenced = _refs(rendered, "secretKeyRef")
    sa = find_object(rendered, "ServiceAccount", kf.service_account)
    assert sa["metadata"]["name"] == kf.service_account
    for name, spec in platform.items():
        (cm,) = spec["configMapAsEnv"]
        assert cm["configMapName"] == kf.env_config_map, name
        assert cm["optional"] is False
        keys = {m["configMapKey"] for m in cm["keyToEnv"]}
        assert keys == set(CONFIG_MAP_ENV) and keys <= set(cmap["data"]), name
        by_secret = {s["secretName"]: s for s in spec["secretAsEnv"]}
        assert set(by_secret) == {kf.s3_secret, kf.mlflow_secret}, name
        assert {m["envVar"] for m in by_secret[kf.s3_secret]["keyToEnv"]} == set(S3_SECRET_ENV)
        assert {m["envVar"] for m in by_secret[kf.mlflow_secret]["keyToEnv"]} == set(
            MLFLOW_SECRET_ENV
        )
        assert all(s["optional"] is False for s in spec["secretAsEnv"])
        assert "pvcMount" not in spec and "secretAsVolume" not in spec  # no volumes used
    # the Secrets the steps read are the ones the manifests' own workloads use, key by key
    assert {kf.s3_secret, kf.mlflow_secret} <= secrets_referenced
    predictor = find_object(rendered, "InferenceService")
    env = {e["name"]: e for e in predictor["spec"]["predictor"]["containers"][0]["env"]}
    for var in MLFLOW_SECRET_ENV:
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": kf.mlflow_secret, "key": var}
    assert cmap["data"]["MLFLOW_TRACKING_URI"].startswith("http://mlflow:")


def test_mlflow_runs_basic_auth_behind_a_network_policy(rendered: Any) -> None:
    from mlflow.cli import server

    dep = find_object(rendered, "Deployment", "mlflow")
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    ctx = server.make_context("server", list(container["args"][1:]))
    assert ctx.params["app_name"] == "basic-auth"
    env = {e["name"]: e for e in container["env"]}
    for var, key in (("MLFLOW_AUTH_ADMIN_USERNAME", "username"),
                     ("MLFLOW_AUTH_ADMIN_PASSWORD", "password"),
                     ("MLFLOW_FLASK_SERVER_SECRET_KEY", "flask-secret-key")):  # fmt: skip
        assert env[var]["valueFrom"]["secretKeyRef"] == {"name": "mlflow-admin", "key": key}
    mount = env["MLFLOW_AUTH_CONFIG_PATH"]["value"].rsplit("/", 1)[0]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    (auth_mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == mount]
    assert volumes[auth_mount["name"]]["secret"]["secretName"] == "mlflow-auth-config"

    policy = find_object(rendered, "NetworkPolicy", "mlflow")
    selected = policy["spec"]["podSelector"]["matchLabels"]
    assert selected.items() <= dep["spec"]["template"]["metadata"]["labels"].items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 5000}]
    peers = [p["podSelector"]["matchLabels"] for p in rule["from"]]
    predictor = find_object(rendered, "InferenceService")["metadata"]["name"]
    assert {"pipelines.kubeflow.org/v2_component": "true"} in peers
    assert {"serving.kserve.io/inferenceservice": predictor} in peers
    assert all("podSelector" in p for p in rule["from"])  # no open namespace or ipBlock peer


# ---------------------------------------------------------------------------------------------
# RBAC: the rendered Role against the table in manifests/README.md

_TABLE = re.compile(r"<!-- rbac-table: begin -->\n(.*?)<!-- rbac-table: end -->", re.S)


def readme_rules() -> set[tuple[str, str, frozenset[str], frozenset[str]]]:
    """(apiGroup, resource, resourceNames, verbs) of each row of the README's RBAC table."""
    match = _TABLE.search((REPO / "manifests" / "README.md").read_text())
    assert match, "manifests/README.md has no rbac-table"
    rows = [line for line in match.group(1).splitlines() if line.startswith("| `")]

    def names(cell: str) -> frozenset[str]:
        return frozenset(n.strip('`" ') for n in cell.split(",") if n.strip())

    out = set()
    for row in rows:
        group, resource, rnames, verbs = (c.strip() for c in row.strip("|").split("|")[:4])
        out.add((group.strip('`"'), resource.strip("`"), names(rnames), names(verbs)))
    return out


def role_rules(role: dict[str, Any]) -> set[tuple[str, str, frozenset[str], frozenset[str]]]:
    out = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.add(
                    (group, resource, frozenset(rule.get("resourceNames", [])),
                     frozenset(rule["verbs"]))
                )  # fmt: skip
    return out


def test_role_grants_exactly_the_readme_table(rendered: Any) -> None:
    kf = KubeflowConfig()
    role = find_object(rendered, "Role", kf.service_account)
    table = readme_rules()
    assert len(table) >= 7
    assert role_rules(role) == table
    for rule in role["rules"]:
        for key in ("verbs", "resources", "apiGroups", "resourceNames"):
            assert "*" not in rule.get(key, []), rule
    # the Secrets it may read: only the KFP object store's; the steps' Secrets reach them as env
    secret_rules = [r for r in table if r[1] == "secrets"]
    assert secret_rules == [("", "secrets", frozenset({"mlpipeline-minio-artifact"}),
                             frozenset({"get"}))]  # fmt: skip
    # what upstream's pipeline-runner Role gives a KFP v2 step and the issue names
    assert ("argoproj.io", "workflowtaskresults", frozenset(), frozenset({"create", "patch"})) in (
        table
    )
    assert ("", "configmaps", frozenset({"kfp-launcher"}), frozenset({"get"})) in table
    isvc = find_object(rendered, "InferenceService")["metadata"]["name"]
    assert ("serving.kserve.io", "inferenceservices", frozenset({isvc}),
            frozenset({"get", "patch"})) in table  # fmt: skip
    binding = find_object(rendered, "RoleBinding", kf.service_account)
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert [s["name"] for s in binding["subjects"]] == [kf.service_account]


def test_the_rbac_check_catches_an_extra_grant(rendered: Any) -> None:
    kf = KubeflowConfig()
    role = find_object(rendered, "Role", kf.service_account)
    widened = {**role, "rules": [*role["rules"], {"apiGroups": [""], "resources": ["secrets"],
                                                   "verbs": ["get"]}]}  # fmt: skip
    assert role_rules(widened) != readme_rules()


# ---------------------------------------------------------------------------------------------
# tracking URI: required in a KFP pod, sqlite default locally


def test_tracking_uri_is_required_in_a_kfp_pod_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pairflow import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.KFP_POD_ENV, raising=False)
    assert tracking.resolve_tracking_uri("", tmp_path) == f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv(tracking.KFP_POD_ENV, "retrain-abc-driver")
    with pytest.raises(tracking.TrackingConfigError) as err:
        tracking.resolve_tracking_uri("", tmp_path)
    assert str(err.value).startswith("mlflow.tracking_uri: not set in a Kubeflow pipeline pod")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "mlflow.db").exists()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    assert tracking.resolve_tracking_uri("", tmp_path) == "http://mlflow:5000"
    assert tracking.resolve_tracking_uri("http://other:5000", tmp_path) == "http://other:5000"


def test_mlflow_settings_are_resolved_in_one_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``resolve_mlflow_settings`` (resolve-config, every CLI) resolves the tracking URI into
    the config and makes ``mlflow.http_*`` MLflow's retry environment; in a KFP pod with no
    URI the step exits with one line."""
    from pairflow import stage_io, tracking

    for name in (tracking.HTTP_RETRIES_ENV, tracking.HTTP_BACKOFF_ENV, tracking.HTTP_TIMEOUT_ENV):
        monkeypatch.setenv(name, "0")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv(tracking.KFP_POD_ENV, raising=False)
    cfg = load_config(None, [f"run.workdir={tmp_path}", "mlflow.http_retries=3"])
    assert tracking.resolve_mlflow_settings(cfg) is cfg
    assert cfg.mlflow.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert os.environ[tracking.HTTP_RETRIES_ENV] == "3"
    assert os.environ[tracking.HTTP_BACKOFF_ENV] == "2"
    assert os.environ[tracking.HTTP_TIMEOUT_ENV] == "120"
    assert tracking.http_attempts("http://mlflow:5000") == 4
    assert tracking.http_attempts(cfg.mlflow.tracking_uri) == 1
    monkeypatch.setenv(tracking.KFP_POD_ENV, "retrain-abc-driver")
    with pytest.raises(SystemExit) as exit_:
        stage_io.resolve_step_mlflow(load_config(None, [f"run.workdir={tmp_path / 'pod'}"]))
    message = str(exit_.value)
    assert message.startswith("pairflow: mlflow.tracking_uri: not set in a Kubeflow pipeline pod")
    assert "\n" not in message
