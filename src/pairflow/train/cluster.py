"""The step's cluster path: stage inputs on shared storage, run the TrainJob, point at outputs.

``train.trainjob.shared_dir`` must be a path mounted (PVC) both in the component's pod and in
the trainer pods: config and manifest are copied to ``<shared_dir>/<job name>/``, the job
writes ``model/``, ``result.json`` and ``checkpoints/`` there, and the step reads them back.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pairflow.config import PairflowConfig
from pairflow.train.launch import WorkerArgs
from pairflow.train.trainjob import (
    PodLogStreamer,
    TrainJobError,
    job_name,
    kubernetes_apis,
    run_trainjob,
    trainjob_body,
)


def stage_inputs(shared: Path, args: WorkerArgs) -> WorkerArgs:
    """Copy config and manifest under ``shared``; the worker args as the job sees them."""
    shared.mkdir(parents=True, exist_ok=True)
    config = shutil.copyfile(args.config, shared / "config.json")
    manifest = shutil.copyfile(args.manifest, shared / Path(args.manifest).name)
    return replace(
        args,
        config=Path(config),
        manifest=str(manifest),
        out=shared / "model",
        checkpoint_dir=shared / "checkpoints",
        result=shared / "result.json",
    )


def run_on_cluster(
    cfg: PairflowConfig, args: WorkerArgs, kfp_run_id: str, emit: Callable[[str], None]
) -> WorkerArgs:
    tj = cfg.train.trainjob
    if not tj.shared_dir or "://" in tj.shared_dir:
        raise TrainJobError(
            f"train.trainjob.shared_dir={tj.shared_dir!r}: set it to a shared volume (PVC) path "
            "mounted in both the component and the trainer pods"
        )
    name = job_name(tj.name_prefix, kfp_run_id)
    job_args = stage_inputs(Path(tj.shared_dir) / name, args)
    body = trainjob_body(
        name,
        tj,
        num_nodes=cfg.train.world_size,
        image=tj.image or cfg.kubeflow.base_image,
        worker_argv=job_args.argv(),
        labels={"pairflow.kfp-run-id": kfp_run_id[:63]} if kfp_run_id else None,
    )
    custom, core = kubernetes_apis()
    run_trainjob(custom, body, tj, on_line=emit, logs=PodLogStreamer(core, tj.namespace))
    return job_args
