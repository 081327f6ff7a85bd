"""Cluster launcher: a Kubeflow Trainer v2 ``TrainJob`` (trainer.kubeflow.org/v1alpha1, v2.3).

:func:`trainjob_body` builds the object from config: ``spec.runtimeRef`` names the
ClusterTrainingRuntime of ``manifests/`` (``pairflow-torch``, names in
:mod:`pairflow.kubeflow.names`), ``spec.trainer`` sets ``image``, ``command``
(``python -m pairflow.stages.train.node --shared <job folder>``: it reads the ``PET_*`` env the
Trainer's torch plugin injects and runs torchrun, see :mod:`pairflow.stages.train.node`),
``numNodes``, ``numProcPerNode``, ``resourcesPerNode`` and ``env`` (``PET_*`` names are
reserved: the Trainer's webhook rejects them). :func:`run_trainjob` creates it with
``CustomObjectsApi``, polls ``status.conditions`` until ``Complete`` or ``Failed`` (or the
timeout), streams the pods' logs, names the failed pods' container reasons when it failed, and
deletes the job when ``cleanup`` is set.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from pairflow.errors import PairflowError
from pairflow.stages.train.settings import TrainJobConfig

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


# kubeflow/trainer v2.3.0 pkg/constants: TorchRunReservedEnvNames
RESERVED_ENV = frozenset(
    {"PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT"}
)


def node_command(job_uri: str) -> list[str]:
    """The pod command: the node entry on the job's shared folder."""
    return ["python", "-m", "pairflow.stages.train.node", "--shared", job_uri]


def trainjob_body(
    name: str,
    cfg: TrainJobConfig,
    *,
    num_nodes: int,
    image: str,
    command: list[str],
    env: dict[str, str] | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The TrainJob object for ``kubectl apply``/``create_namespaced_custom_object``."""
    if not image:
        raise TrainJobError("train.trainjob.image (or kubeflow.base_image) is empty")
    reserved = sorted(RESERVED_ENV & {*cfg.env, *(env or {})})
    if reserved:
        raise TrainJobError(
            f"train.trainjob.env sets {reserved}: the Trainer injects these itself and rejects "
            "a TrainJob that sets them"
        )
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
                "command": command,
                "numNodes": num_nodes,
                "numProcPerNode": cfg.nproc_per_node,
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
    pod_failures: Callable[[str], list[str]] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> JobOutcome:
    """Create the TrainJob, wait for Complete/Failed (``cfg.timeout_s``), clean up by config.

    ``logs(name)`` returns new log lines since the last call (see :class:`PodLogStreamer`);
    ``pod_failures(name)`` the failed pods' reasons (see :func:`failed_pod_reasons`).
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
    failed_reasons: list[str] = []
    try:
        while True:
            obj = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            if logs is not None:
                for line in logs(name):
                    on_line(line)
            state, message = job_state(obj)
            if state == "Failed" and pod_failures is not None:
                failed_reasons = pod_failures(name)
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
        pods = f"; {'; '.join(failed_reasons)}" if failed_reasons else ""
        raise TrainJobError(f"TrainJob {ns}/{name} failed: {message}{pods}")
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


def failed_pod_reasons(core: Any, namespace: str, name: str) -> list[str]:
    """``pod/container: reason (exit N): message`` of the job's failed containers.

    Pods carry the JobSet label with the TrainJob's name (the Trainer names the JobSet after
    the TrainJob); a container counts when its last or current state is terminated with a
    non-zero exit code, or it waits with a reason such as ImagePullBackOff.
    """
    out: list[str] = []
    try:
        pods = core.list_namespaced_pod(namespace, label_selector=f"{JOBSET_LABEL}={name}")
    except Exception as exc:  # noqa: BLE001 - the job's own failure message is still raised
        return [f"(pod statuses unavailable: {type(exc).__name__}: {exc})"]
    for pod in pods.items:
        status = pod.status
        for cs in (status.init_container_statuses or []) + (status.container_statuses or []):
            for st in (cs.state, cs.last_state):
                term = getattr(st, "terminated", None) if st is not None else None
                if term is not None and term.exit_code:
                    msg = (term.message or "").strip().splitlines()
                    out.append(
                        f"{pod.metadata.name}/{cs.name}: {term.reason or 'Error'} "
                        f"(exit {term.exit_code})" + (f": {msg[-1]}" if msg else "")
                    )
                    break
                wait = getattr(st, "waiting", None) if st is not None else None
                if wait is not None and wait.reason not in (None, "ContainerCreating"):
                    out.append(f"{pod.metadata.name}/{cs.name}: {wait.reason}: {wait.message}")
                    break
        if not out and status.phase == "Failed":
            out.append(f"{pod.metadata.name}: {status.reason or 'Failed'}: {status.message}")
    return out


def kubernetes_apis() -> tuple[Any, Any]:
    """(CustomObjectsApi, CoreV1Api) from in-cluster config, else the local kubeconfig."""
    # lazy: kubernetes (slow to import); only this path needs it
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi(), client.CoreV1Api()
