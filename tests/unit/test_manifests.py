"""manifests/: both overlays render with the real kustomize (``kubectl kustomize``), core objects
pass the Kubernetes OpenAPI schemas (kubernetes-validate, strict), custom resources pass the
upstream CRD schemas stored in manifests/schemas (KServe v0.20.0, Kubeflow Trainer v2.3.0,
Prometheus Operator v0.93.0; strict fields), and the security/wiring rules hold. No cluster."""

from __future__ import annotations

import copy
import re
from typing import Any

import click
import kubernetes_validate
import pytest
import yaml
from tests.manifests_render import (
    K8S_VERSION,
    MANIFESTS,
    OVERLAYS,
    crd_errors,
    crd_schemas,
    render_overlay,
    validate_object,
)

from pairflow.kubeflow import names
from pairflow.kubeflow.settings import KubeflowConfig
from pairflow.stages.train.settings import TrainJobConfig

PREDICTOR_METRICS = {  # names exported by pairflow.serve.metrics (see alerts.yaml)
    "pairflow_predictor_requests_total",
    "pairflow_predictor_errors_total",
    "pairflow_predictor_latency_seconds_bucket",
}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render_overlay(request.param)


def _one(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    hits = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(hits) == 1, (kind, name, len(hits))
    return hits[0]


def _containers(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                found.extend(value)
            found.extend(_containers(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_containers(item))
    return found


# ---------------------------------------------------------------------------------------------
# schema validation


def test_every_rendered_object_passes_its_schema(rendered: Any) -> None:
    _, objs = rendered
    for obj in objs:
        validate_object(obj)
    assert {"Namespace", "ServiceAccount", "Role", "RoleBinding", "Deployment", "Service",
            "ClusterTrainingRuntime", "InferenceService", "PodMonitor",
            "PrometheusRule"} <= {o["kind"] for o in objs}  # fmt: skip


def test_stored_schemas_record_their_upstream_source() -> None:
    docs = crd_schemas()
    assert set(docs) == {
        ("serving.kserve.io/v1beta1", "InferenceService"),
        ("trainer.kubeflow.org/v1alpha1", "TrainJob"),
        ("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime"),
        ("monitoring.coreos.com/v1", "PodMonitor"),
        ("monitoring.coreos.com/v1", "PrometheusRule"),
    }
    tags = {d["source"]["repo"]: d["source"]["tag"] for d in docs.values()}
    assert tags == {
        "kserve/kserve": "v0.20.0",
        "kubeflow/trainer": "v2.3.0",
        "prometheus-operator/prometheus-operator": "v0.93.0",
    }
    for doc in docs.values():
        assert re.fullmatch(r"[0-9a-f]{40}", doc["source"]["commit"])


def test_schemas_reject_what_they_should() -> None:
    objs = render_overlay("dev")
    isvc = _one(objs, "InferenceService")
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["canaryTrafficPercent"] = "ten"
    assert any("canaryTrafficPercent" in e for e in crd_errors(bad))
    bad = copy.deepcopy(isvc)  # a model key beside the container: two implementations
    bad["spec"]["predictor"]["model"] = {"storageUri": "models:/m/1"}
    assert not crd_errors(bad)
    with pytest.raises(AssertionError, match="exactly one predictor implementation"):
        validate_object(bad)
    runtime = copy.deepcopy(_one(objs, "ClusterTrainingRuntime"))
    runtime["spec"]["mlPolicy"]["torch"]["numProcPerNode"] = "auto"  # removed in Trainer v2.2
    assert any("numProcPerNode" in e for e in crd_errors(runtime))
    rule = copy.deepcopy(_one(objs, "PrometheusRule", "pairflow-canary"))
    rule["spec"]["groups"][0]["rules"][0]["for"] = "5 minutes"
    assert crd_errors(rule)
    dep = copy.deepcopy(_one(objs, "Deployment", "mlflow"))
    dep["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


# ---------------------------------------------------------------------------------------------
# RBAC and secrets


# RBAC of the pipeline ServiceAccount: tests/unit/test_cluster_config.py (against the table in
# manifests/README.md).


def test_no_secrets_in_yaml() -> None:
    for path in MANIFESTS.rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict):
                assert doc.get("kind") != "Secret", path
    for overlay in OVERLAYS:
        for container in _containers(render_overlay(overlay)):
            for env in container.get("env", []):
                if re.search(r"SECRET|PASSWORD|TOKEN|ACCESS_KEY", env["name"]):
                    assert "secretKeyRef" in env.get("valueFrom", {}), (overlay, env)
                assert not ("value" in env and "valueFrom" in env), (overlay, env)


# ---------------------------------------------------------------------------------------------
# MLflow server


def _mlflow_args(objs: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    (container,) = _one(objs, "Deployment", "mlflow")["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e for e in container["env"]}
    return container["args"], env


def test_mlflow_server_flags_are_real_mlflow_flags(rendered: Any) -> None:
    from mlflow.cli import server

    _, objs = rendered
    args, _ = _mlflow_args(objs)
    assert args[0] == "server"
    ctx = server.make_context("server", list(args[1:]))  # click rejects unknown flags
    hosts = ctx.params["allowed_hosts"].split(",")
    assert "*" not in hosts
    assert "mlflow.$(POD_NAMESPACE).svc.cluster.local:5000" in hosts
    assert ctx.params["artifacts_destination"] == "$(MLFLOW_ARTIFACTS_DESTINATION)"
    assert ctx.params["serve_artifacts"] is True
    with pytest.raises(click.UsageError):
        server.make_context("server", ["--allowed-host=x"])


def test_mlflow_backend_db_comes_from_the_overlay(rendered: Any) -> None:
    name, objs = rendered
    args, env = _mlflow_args(objs)
    assert "--backend-store-uri=$(MLFLOW_BACKEND_STORE_URI)" in args
    backend = env["MLFLOW_BACKEND_STORE_URI"]
    dep = _one(objs, "Deployment", "mlflow")
    if name == "dev":
        assert backend["value"].startswith("sqlite:////mlflow-data/")
        mounts = dep["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "mlflow-data", "mountPath": "/mlflow-data"} in mounts
        assert _one(objs, "PersistentVolumeClaim", "mlflow-data")["metadata"]["namespace"]
        assert dep["spec"]["replicas"] == 1
    else:
        assert backend["valueFrom"]["secretKeyRef"] == {"name": "mlflow-backend", "key": "uri"}
        assert dep["spec"]["replicas"] == 2
        hosts = _one(objs, "ConfigMap", "mlflow-config")["data"]["extra-allowed-hosts"]
        assert hosts == "mlflow.pairflow.example.com"
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[var]["valueFrom"]["secretKeyRef"]["name"] == "pairflow-s3"
    s3_endpoint = env["MLFLOW_S3_ENDPOINT_URL"]["valueFrom"]["configMapKeyRef"]
    assert s3_endpoint == {"name": KubeflowConfig().env_config_map, "key": "AWS_ENDPOINT_URL"}
    # every $(VAR) in args is defined in the container env
    for ref in re.findall(r"\$\((\w+)\)", " ".join(args)):
        assert ref in env, ref
    service = _one(objs, "Service", "mlflow")
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]


# ---------------------------------------------------------------------------------------------
# overlays: images, replicas, resources, GPUs


def test_overlays_set_images_replicas_and_gpus(rendered: Any) -> None:
    name, objs = rendered
    images = [c["image"] for c in _containers(objs)]
    assert images and all(i.startswith("ghcr.io/pairflow/") for i in images), images
    if name == "prod":
        assert all(re.search(r"@sha256:[0-9a-f]{64}$", i) for i in images), images
    runtime = _one(objs, "ClusterTrainingRuntime")
    assert runtime["metadata"]["name"] == names.TRAINING_RUNTIME == TrainJobConfig().runtime
    (job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    labels = job["template"]["metadata"]["labels"]
    assert labels["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    containers = job["template"]["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == [names.TRAINER_CONTAINER]  # gets PET_*
    # cluster-scoped upstream; kustomize, which has no scope for CRD kinds, still sets the
    # namespace, and kubectl drops it for a cluster-scoped kind
    assert (
        crd_schemas()[("trainer.kubeflow.org/v1alpha1", "ClusterTrainingRuntime")]["scope"]
        == "Cluster"
    )
    pod = runtime["spec"]["template"]["spec"]["replicatedJobs"][0]["template"]["spec"]["template"]
    node = pod["spec"]["containers"][0]
    predictor = _one(objs, "InferenceService")["spec"]["predictor"]
    if name == "prod":
        assert runtime["spec"]["mlPolicy"]["numNodes"] == 2
        assert node["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert pod["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
        assert (predictor["minReplicas"], predictor["maxReplicas"]) == (2, 10)
        assert predictor["containers"][0]["resources"]["requests"]["cpu"] == "2"
        assert runtime["spec"]["mlPolicy"]["torch"] == {}  # numProcPerNode: the TrainJob's
    else:
        assert "resources" not in node
        assert predictor["minReplicas"] == 0
    for obj in objs:
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "pairflow"
        assert obj["metadata"]["labels"]["pairflow.dev/environment"] == name
        if obj["kind"] != "Namespace":
            assert obj["metadata"]["namespace"] == "pairflow", obj["metadata"]


def test_predictor_is_serverless_and_scraped(rendered: Any) -> None:
    _, objs = rendered
    isvc = _one(objs, "InferenceService")
    assert isvc["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "Serverless"
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]  # set by the deploy step
    monitor = _one(objs, "PodMonitor", isvc["metadata"]["name"])
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector == {"serving.kserve.io/inferenceservice": isvc["metadata"]["name"]}
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == "/metrics"


def test_canary_alerts_use_the_predictor_metric_names(rendered: Any) -> None:
    _, objs = rendered
    canary = _one(objs, "PrometheusRule", "pairflow-canary")
    rules = [r for g in canary["spec"]["groups"] for r in g["rules"]]
    recorded = {r["record"] for r in rules if "record" in r}
    alerts = [r for r in rules if "alert" in r]
    assert len(alerts) >= 3
    for rule in rules:
        names = set(re.findall(r"\b(pairflow[_:][a-z0-9_:]+)", rule["expr"]))
        assert names, rule
        assert names <= PREDICTOR_METRICS | recorded, names - PREDICTOR_METRICS - recorded
    for rule in rules:
        if "record" in rule:
            assert "by (model_version" in rule["expr"]
    error_alert = next(a for a in alerts if a["alert"] == "PairflowPredictorErrorRateHigh")
    assert "model_version" in error_alert["annotations"]["summary"]
