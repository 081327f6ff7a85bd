"""Cluster launcher: a Kubeflow Trainer v2 ``TrainJob`` (trainer.kubeflow.org/v1alpha1).

:func:`trainjob_body` builds the object from config: ``spec.runtimeRef`` names a
ClusterTrainingRuntime (e.g. ``torch-distributed``, which runs torchrun on every node),
``spec.trainer`` sets ``image``, ``command`` (``python -m pairflow.train ...``), ``numNodes``,
``resourcesPerNode`` (CPU, memory, ``nvidia.com/gpu``) and ``env``. :func:`run_trainjob`
creates it with ``CustomObjectsApi``, polls its ``status.conditions`` until ``Complete`` or
``Failed`` is True (or the timeout passes), streams the trainer pods' logs (``CoreV1Api``,
pods labelled with the JobSet name), and deletes the job when ``cleanup`` is set. The model is
written by rank 0 to shared storage (``train.trainjob.shared_dir``) and read back by the step.

Tests drive the wait/cleanup logic with a fake ``CustomObjectsApi`` (no cluster is available
here); the body is checked against the field names of the v1alpha1 API.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pairflow.errors import PairflowError
from pairflow.train.settings import TrainJobConfig

GROUP = "trainer.kubeflow.org"
VERSION = "v1alpha1"
PLURAL = "trainjobs"
KIND = "TrainJob"
JOBSET_LABEL = "jobset.sigs.k8s.io/jobset-name"


class TrainJobError(PairflowError):
    """The TrainJob failed, timed out or could not be created."""


class CustomObjects(Protocol):
    """The subset of ``kubernetes.client.CustomObjectsApi`` used here."""

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]
    ) -> Any: ...

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any: ...

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any: ...


def job_name(prefix: str, kfp_run_id: str = "") -> str:
    """A DNS-1035 name: prefix + short run id (or random) suffix, at most 63 characters."""
    suffix = (kfp_run_id.replace("_", "-").lower()[:8] or uuid.uuid4().hex[:8]).strip("-")
    return f"{prefix}-{suffix}-{uuid.uuid4().hex[:5]}"[:63].rstrip("-")


def trainjob_body(
    name: str,
    cfg: TrainJobConfig,
    *,
    num_nodes: int,
    image: str,
    worker_argv: list[str],
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The TrainJob object for ``kubectl apply``/``create_namespaced_custom_object``."""
    if not image:
        raise TrainJobError("train.trainjob.image (or kubeflow.base_image) is empty")
    requests: dict[str, str] = {"cpu": cfg.cpu, "memory": cfg.memory}
    limits: dict[str, str] = {"memory": cfg.memory}
    if cfg.gpus_per_node:
        requests["nvidia.com/gpu"] = str(cfg.gpus_per_node)
        limits["nvidia.com/gpu"] = str(cfg.gpus_per_node)
    merged_env = {**cfg.env, **(env or {})}
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": cfg.namespace,
            "labels": {"app.kubernetes.io/part-of": "pairflow", **(labels or {})},
        },
        "spec": {
            "runtimeRef": {
                "name": cfg.runtime,
                "apiGroup": GROUP,
                "kind": "ClusterTrainingRuntime",
            },
            "trainer": {
                "image": image,
                "command": ["python", "-m", "pairflow.train", *worker_argv],
                "numNodes": num_nodes,
                "resourcesPerNode": {"requests": requests, "limits": limits},
                "env": [{"name": k, "value": v} for k, v in sorted(merged_env.items())],
            },
        },
    }


@dataclass(frozen=True)
class JobOutcome:
    name: str
    state: str  # "Complete" | "Failed"
    message: str
    seconds: float


def job_state(obj: dict[str, Any]) -> tuple[str | None, str]:
    """``("Complete" | "Failed" | None, message)`` from a TrainJob's status conditions."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") in ("Complete", "Failed") and str(cond.get("status")) == "True":
            return str(cond["type"]), str(cond.get("message") or cond.get("reason") or "")
    return None, ""


def run_trainjob(
    api: CustomObjects,
    body: dict[str, Any],
    cfg: TrainJobConfig,
    *,
    on_line: Callable[[str], None] = print,
    logs: Callable[[str], list[str]] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> JobOutcome:
    """Create the TrainJob, wait for Complete/Failed (``cfg.timeout_s``), clean up by config.

    ``logs(name)`` returns new log lines since the last call (see :class:`PodLogStreamer`).
    Raises :class:`TrainJobError` when the job failed or timed out (after cleanup).
    """
    name = str(body["metadata"]["name"])
    ns = cfg.namespace
    try:
        api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, body)
    except Exception as exc:
        raise TrainJobError(f"TrainJob {ns}/{name}: cannot create ({exc})") from exc
    on_line(f"TrainJob {ns}/{name} created (runtime {cfg.runtime})")
    start = clock()
    state: str | None = None
    message = ""
    try:
        while True:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            if logs is not None:
                for line in logs(name):
                    on_line(line)
            state, message = job_state(obj)
            if state is not None:
                break
            if clock() - start > cfg.timeout_s:
                raise TrainJobError(
                    f"TrainJob {ns}/{name}: not finished after {cfg.timeout_s} s "
                    "(train.trainjob.timeout_s)"
                )
            sleep(cfg.poll_s)
    finally:
        if cfg.cleanup:
            try:
                api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
                on_line(f"TrainJob {ns}/{name} deleted")
            except Exception as exc:  # noqa: BLE001 - cleanup must not hide the outcome
                on_line(f"TrainJob {ns}/{name}: cleanup failed ({exc})")
    seconds = clock() - start
    if state == "Failed":
        raise TrainJobError(f"TrainJob {ns}/{name} failed: {message}")
    on_line(f"TrainJob {ns}/{name} complete in {seconds:.0f} s")
    return JobOutcome(name, str(state), message, seconds)


class PodLogStreamer:
    """New log lines of the TrainJob's pods on each call (``CoreV1Api``; JobSet label)."""

    def __init__(self, core: Any, namespace: str) -> None:
        self.core = core
        self.namespace = namespace
        self.seen: dict[str, int] = {}

    def __call__(self, name: str) -> list[str]:
        out: list[str] = []
        try:
            pods = self.core.list_namespaced_pod(
                self.namespace, label_selector=f"{JOBSET_LABEL}={name}"
            )
            for pod in pods.items:
                pod_name = pod.metadata.name
                text = self.core.read_namespaced_pod_log(pod_name, self.namespace)
                lines = str(text).splitlines()
                start = self.seen.get(pod_name, 0)
                out.extend(f"[{pod_name}] {ln}" for ln in lines[start:])
                self.seen[pod_name] = len(lines)
        except Exception as exc:  # noqa: BLE001 - pods may not exist yet; logs are best effort
            out.append(f"(logs unavailable: {type(exc).__name__})")
        return out


def kubernetes_apis() -> tuple[Any, Any]:
    """(CustomObjectsApi, CoreV1Api) from in-cluster config, else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi(), client.CoreV1Api()
