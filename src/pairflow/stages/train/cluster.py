"""The step's cluster path: stage inputs on shared storage, run the TrainJob, fetch outputs.

``train.trainjob.shared_dir`` is an ``s3://`` prefix (or the mount path of a PVC the runtime
mounts in every trainer pod). The job folder ``<shared_dir>/<job name>/`` gets ``job.json``,
``config.json``, the manifest, and ``base/`` when the base model is a local folder; the nodes
(:mod:`pairflow.stages.train.node`) keep checkpoints there and write ``model/`` and ``result.json``,
which the step copies back next to its model dir. The manifest's image URIs must be readable
from the trainer pods (``s3://``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pairflow.config import PairflowConfig
from pairflow.stages.train.launch import WorkerArgs
from pairflow.stages.train.node import JOB_FILE
from pairflow.stages.train.shared import SharedStore
from pairflow.stages.train.trainjob import (
    PodLogStreamer,
    TrainJobError,
    failed_pod_reasons,
    job_name,
    kubernetes_apis,
    node_command,
    run_trainjob,
    trainjob_body,
)


@dataclass(frozen=True)
class PlannedJob:
    """A TrainJob and the job folder it runs on."""

    name: str
    store: SharedStore
    body: dict[str, Any]
    job: dict[str, Any]


def num_nodes(cfg: PairflowConfig) -> int:
    world, per = cfg.train.world_size, cfg.train.trainjob.nproc_per_node
    if world % per:
        raise TrainJobError(
            f"train.world_size={world} is not a multiple of train.trainjob.nproc_per_node={per}"
        )
    return world // per


def plan_job(cfg: PairflowConfig, args: WorkerArgs, kfp_run_id: str) -> PlannedJob:
    """The TrainJob body and job description for ``args`` (nothing is written or sent)."""
    tj = cfg.train.trainjob
    if not tj.shared_dir:
        raise TrainJobError(
            "train.trainjob.shared_dir is empty: set an s3:// prefix (or the mount path of a "
            "PVC mounted in every trainer pod) that the nodes and this step both reach"
        )
    name = job_name(tj.name_prefix, kfp_run_id)
    store = SharedStore(tj.shared_dir, cfg.data.s3).child(name)
    # a base on the step's local disk (e.g. the tiny CLIP built from config) goes along
    local_base = bool(args.base) and Path(args.base).is_dir()
    job = {
        "manifest": "manifest" + (Path(args.manifest).suffix or ".parquet"),
        "base": store.uri("base") if local_base else args.base,
        "local_base": args.base if local_base else "",
        "tracking_uri": args.tracking_uri,
        "run_id": args.run_id,
    }
    body = trainjob_body(
        name,
        tj,
        num_nodes=num_nodes(cfg),
        image=tj.image or cfg.kubeflow.base_image,
        command=node_command(store.root),
        labels={"pairflow.kfp-run-id": kfp_run_id[:63]} if kfp_run_id else None,
    )
    return PlannedJob(name, store, body, job)


def stage_inputs(plan: PlannedJob, args: WorkerArgs) -> None:
    """Copy config, manifest and ``job.json`` into the job folder."""
    if plan.job["local_base"]:
        plan.store.push_tree(Path(plan.job["local_base"]), "base")
    plan.store.put(Path(args.config), "config.json")
    plan.store.put(Path(args.manifest), plan.job["manifest"])
    plan.store.put_bytes(json.dumps(plan.job, indent=2).encode(), JOB_FILE)


def fetch_outputs(plan: PlannedJob, args: WorkerArgs) -> WorkerArgs:
    """Copy ``model/`` and ``result.json`` back; the args pointing at the local copies."""
    local = Path(args.result).parent / plan.name
    if not plan.store.exists("result.json"):
        raise TrainJobError(
            f"TrainJob {plan.name} completed without {plan.store.uri('result.json')}"
        )
    plan.store.get("result.json", local / "result.json")
    if plan.store.pull_tree("model", local / "model") == 0:
        raise TrainJobError(f"TrainJob {plan.name}: no model under {plan.store.uri('model')}")
    return replace(args, out=local / "model", result=local / "result.json", checkpoint_dir=None)


def run_on_cluster(
    cfg: PairflowConfig, args: WorkerArgs, kfp_run_id: str, emit: Callable[[str], None]
) -> WorkerArgs:
    tj = cfg.train.trainjob
    plan = plan_job(cfg, args, kfp_run_id)
    stage_inputs(plan, args)
    custom, core = kubernetes_apis()
    run_trainjob(
        custom,
        plan.body,
        tj,
        on_line=emit,
        logs=PodLogStreamer(core, tj.namespace),
        pod_failures=lambda name: failed_pod_reasons(core, tj.namespace, name),
    )
    return fetch_outputs(plan, args)
