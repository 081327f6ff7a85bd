"""``pairflow deploy --backend kserve --dry-run``: every JSON patch the canary would send.

The patches are computed against the InferenceService as it is: the live object (kubeconfig or
in-cluster), or ``--isvc-file`` (for example ``kubectl kustomize manifests/overlays/prod``
output). Printed as a YAML stream, one document per action (start, each step, rollback,
promote), each with the ``kubectl patch --type=json`` command that would apply it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from pairflow.stages.deploy.aliases import Rollout
from pairflow.stages.deploy.kserve import (
    GROUP,
    PLURAL,
    VERSION,
    KServeError,
    check_windows,
    promote_patch,
    rollback_patch,
    start_patch,
    weight_patch,
)
from pairflow.stages.deploy.settings import DeployConfig


def isvc_from_file(path: Path, name: str) -> dict[str, Any]:
    """The InferenceService ``name`` among the YAML documents of ``path``."""
    docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
    hits = [
        d
        for d in docs
        if d.get("kind") == "InferenceService" and (d.get("metadata") or {}).get("name") == name
    ]
    if len(hits) != 1:
        raise KServeError(f"{path}: {len(hits)} InferenceService objects named {name!r}")
    return hits[0]


def isvc_from_cluster(cfg: DeployConfig) -> dict[str, Any]:
    # lazy: kubernetes (slow to import); only this path needs it
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    k = cfg.kserve
    obj = client.CustomObjectsApi().get_namespaced_custom_object(
        GROUP, VERSION, k.namespace, PLURAL, k.inference_service
    )
    return dict(obj)


def planned_patches(
    isvc: dict[str, Any], rollout: Rollout, cfg: DeployConfig
) -> list[dict[str, Any]]:
    """One entry per action, in the order a rollout sends them."""
    assert rollout.stable is not None
    check_windows(cfg)
    k = cfg.kserve
    pin = k.model_uri_template.format
    cand = pin(model_uri=rollout.uri(rollout.candidate), version=rollout.candidate)
    stable = pin(model_uri=rollout.uri(rollout.stable), version=rollout.stable)
    actions: list[tuple[str, list[dict[str, Any]]]] = [("start", start_patch(isvc, cand))]
    actions += [(f"step {w}%", weight_patch(w)) for w in cfg.steps if w < 100]
    actions += [("rollback", rollback_patch(isvc, stable)), ("promote", promote_patch())]
    out = []
    for action, ops in actions:
        cmd = (
            f"kubectl patch inferenceservice {k.inference_service} -n {k.namespace} "
            f"--type=json -p '{json.dumps(ops, separators=(',', ':'))}'"
        )
        out.append({"action": action, "kubectl": cmd, "patch": ops})
    return out


def patches_yaml(isvc: dict[str, Any], rollout: Rollout, cfg: DeployConfig) -> str:
    docs = planned_patches(isvc, rollout, cfg)
    return yaml.safe_dump_all(docs, sort_keys=False)
