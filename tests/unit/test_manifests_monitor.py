"""Request logging on a cluster: the predictor's KServe payload logger (``spec.predictor.logger``)
and the ``pairflow-monitor-sink`` Deployment/Service, rendered by the real kustomize and checked
against the stored upstream KServe CRD schema (v0.20.0) and the real CLI."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest
import typer
from tests.manifests_render import OVERLAYS, crd_errors, crd_schemas, find_object, render_overlay
from typer._click.exceptions import UsageError

from pairflow.config import load_config
from pairflow.kubeflow import names
from pairflow.serve.requestlog.cloudevents import HEADER_LENGTH_METADATA

SINK = "pairflow-monitor-sink"


@pytest.fixture(scope="module", params=OVERLAYS)
def objs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render_overlay(request.param)


def test_logger_spec_is_in_the_upstream_schema_and_points_at_the_sink(
    objs: list[dict[str, Any]],
) -> None:
    isvc = find_object(objs, "InferenceService", names.INFERENCE_SERVICE)
    assert crd_errors(isvc) == []
    logger = isvc["spec"]["predictor"]["logger"]
    assert logger["mode"] == "all"  # requests (caption, image) and responses (the payload)
    assert logger["metadataHeaders"] == [HEADER_LENGTH_METADATA]
    service = find_object(objs, "Service", SINK)
    assert logger["url"] == f"http://{service['metadata']['name']}"
    assert service["metadata"]["namespace"] == isvc["metadata"]["namespace"]
    (container,) = isvc["spec"]["predictor"]["containers"]
    args = container["args"]
    assert args[args.index("--set") + 1] == "serve.mark_for_logger=true"
    # the stored schema really has the field (a logger-less schema would accept it as unknown
    # only if the check were lax: see the next test)
    spec = crd_schemas()[("serving.kserve.io/v1beta1", "InferenceService")]["openAPIV3Schema"]
    logger_schema = spec["properties"]["spec"]["properties"]["predictor"]["properties"]["logger"]
    assert logger_schema["properties"]["mode"]["enum"] == ["all", "request", "response"]


def test_a_wrong_logger_field_fails_the_schema() -> None:
    isvc = find_object(render_overlay("dev"), "InferenceService", names.INFERENCE_SERVICE)
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["logger"]["mode"] = "everything"
    assert any("logger/mode" in e and "everything" in e for e in crd_errors(bad)), crd_errors(bad)
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["logger"]["sampleRate"] = 0.5  # not a KServe field
    assert any("sampleRate" in e for e in crd_errors(bad)), crd_errors(bad)
    bad = copy.deepcopy(isvc)
    bad["spec"]["predictor"]["logger"]["metadataHeaders"] = HEADER_LENGTH_METADATA
    assert any("metadataHeaders" in e for e in crd_errors(bad)), crd_errors(bad)


def _sink_container(objs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    dep = find_object(objs, "Deployment", SINK)
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    return dep, container


def test_sink_runs_the_real_cli_with_env_from_the_shared_names(
    objs: list[dict[str, Any]],
) -> None:
    from pairflow.cli import app

    dep, container = _sink_container(objs)
    assert container["command"] == ["pairflow"] and container["args"][0] == "monitor-sink"
    sink_cmd: Any = getattr(typer.main.get_command(app), "commands")["monitor-sink"]  # noqa: B009
    ctx = sink_cmd.make_context("monitor-sink", list(container["args"][1:]))  # unknown: error
    assert ctx.params["host"] == "0.0.0.0"
    with pytest.raises(UsageError):
        sink_cmd.make_context("monitor-sink", ["--log-prefix=s3://x"])  # not a flag
    port = ctx.params["port"]
    assert [p["containerPort"] for p in container["ports"]] == [port]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": port}
    sets = ctx.params["set_"]
    env = {e["name"]: e for e in container["env"]}
    for ref in re.findall(r"\$\((\w+)\)", " ".join(sets)):
        assert ref in env, ref
    # the --set keys are real config keys (values as the kubelet would expand them)
    cfg = load_config(None, [re.sub(r"\$\((\w+)\)", "s3://b/p", s) for s in sets])
    assert cfg.monitor.log_prefix == "s3://b/p" and cfg.data.s3.endpoint_url == "s3://b/p"
    refs = {n: e["valueFrom"] for n, e in env.items()}
    assert refs["AWS_ENDPOINT_URL"]["configMapKeyRef"]["name"] == "pairflow-pipeline-env"
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert refs[var]["secretKeyRef"]["name"] == "pairflow-s3"
    prefix = refs["PAIRFLOW_MONITOR_LOG_PREFIX"]["configMapKeyRef"]
    assert find_object(objs, "ConfigMap", prefix["name"])["data"][prefix["key"]].startswith("s3://")
    # SIGTERM writes what is buffered: give it time
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    service = find_object(objs, "Service", SINK)
    assert service["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == port
    # only the predictor's pods (their KServe agent) and Prometheus reach the sink
    policy = find_object(objs, "NetworkPolicy", SINK)
    assert policy["spec"]["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    sources = [f["podSelector"]["matchLabels"] for f in policy["spec"]["ingress"][0]["from"]]
    assert {"serving.kserve.io/inferenceservice": names.INFERENCE_SERVICE} in sources
    scrape = find_object(objs, "PodMonitor", SINK)
    assert scrape["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
