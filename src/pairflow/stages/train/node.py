"""The TrainJob pod entry: ``python -m pairflow.stages.train.node --shared URI``.

Kubeflow Trainer's torch plugin (kubeflow/trainer v2.3.0,
``pkg/runtime/framework/plugins/torch/torch.go`` ``EnforceMLPolicy``) injects into the
runtime's ``node`` container only ``PET_NNODES`` (``spec.trainer.numNodes``),
``PET_NPROC_PER_NODE`` (``spec.trainer.numProcPerNode``), ``PET_NODE_RANK`` (the Job
completion index), ``PET_MASTER_ADDR`` (``<job>-node-0-0.<job>``) and ``PET_MASTER_PORT``
(29400). This entry reads them and starts ``torchrun`` with them, so every pod's processes join
one job of ``PET_NNODES × PET_NPROC_PER_NODE`` ranks (``RANK``/``WORLD_SIZE`` come from
torchrun, as in the local launcher).

Shared storage (:mod:`pairflow.stages.train.shared`): the job folder ``--shared`` holds
``job.json``,
the config and manifest; checkpoints written by rank 0 (on node 0) are kept there, and every
node restores them before it starts, so a rerun resumes where the job stopped. On ``s3://``
the node works in a local scratch folder: node 0 copies each new complete checkpoint up as
soon as ``LATEST`` names it (``LATEST`` last, then older sets are deleted), and the model and
result at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from pairflow.config import S3Config
from pairflow.errors import PairflowError
from pairflow.models.checkpoint import LATEST
from pairflow.stages.train.shared import SharedStore

PET_VARS = (
    "PET_NNODES",
    "PET_NPROC_PER_NODE",
    "PET_NODE_RANK",
    "PET_MASTER_ADDR",
    "PET_MASTER_PORT",
)
JOB_FILE = "job.json"


class NodeError(PairflowError):
    """The pod is missing the Trainer's env, or the job folder is incomplete."""


def pet_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The ``PET_*`` values; a clear error naming the missing ones."""
    env = dict(os.environ if env is None else env)
    missing = [k for k in PET_VARS if not env.get(k)]
    if missing:
        raise NodeError(
            f"missing {', '.join(missing)}: run this entry in a TrainJob whose runtime has "
            "mlPolicy.torch (the Trainer injects PET_* into the container named 'node')"
        )
    return {k: env[k] for k in PET_VARS}


def torchrun_argv(pet: dict[str, str], worker_argv: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", pet["PET_NNODES"],
        "--nproc_per_node", pet["PET_NPROC_PER_NODE"],
        "--node_rank", pet["PET_NODE_RANK"],
        "--master_addr", pet["PET_MASTER_ADDR"],
        "--master_port", pet["PET_MASTER_PORT"],
        "-m", "pairflow.stages.train",
        *worker_argv,
    ]  # fmt: skip


class CheckpointSync:
    """Node 0 on S3: copy each new complete checkpoint up (its files, then ``LATEST``)."""

    def __init__(self, local: Path, store: SharedStore, interval_s: float = 1.0) -> None:
        self.local, self.store, self.interval_s = local, store, interval_s
        self.pushed = ""
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def sync(self) -> None:
        latest = self.local / LATEST
        if not latest.exists():
            return
        name = latest.read_text().strip()
        if not name or name == self.pushed or not (self.local / name).is_dir():
            return
        self.store.push_tree(self.local / name, name)
        self.store.put(latest, LATEST)
        self.store.prune({name, LATEST})  # one checkpoint set, as rank 0 keeps locally
        self.pushed = name
        print(f"[pairflow-node] checkpoint {name} copied to {self.store.root}", flush=True)

    def _run(self) -> None:
        while not self.stop.wait(self.interval_s):
            try:
                self.sync()
            except (OSError, PairflowError) as exc:  # the folder can move while rank 0 rotates
                print(f"[pairflow-node] checkpoint copy retried later: {exc}", flush=True)

    def __enter__(self) -> CheckpointSync:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()
        self.sync()


def run_node(shared: str, scratch: Path, env: dict[str, str] | None = None) -> int:
    """Run this pod's share of the job; torchrun's exit code."""

    pet = pet_env(env)
    store = SharedStore(shared, S3Config())
    job: dict[str, Any] = json.loads(store.get_bytes(JOB_FILE))
    node_rank = int(pet["PET_NODE_RANK"])
    local_root = store.local_path()
    work = local_root if local_root is not None else scratch
    if local_root is None:
        store.get("config.json", work / "config.json")
        store.get(job["manifest"], work / job["manifest"])
        restored = store.pull_tree("checkpoints", work / "checkpoints")
        print(f"[pairflow-node] node {node_rank}: {restored} checkpoint files restored", flush=True)
    argv = [
        "--config", str(work / "config.json"),
        "--manifest", str(work / job["manifest"]),
        "--out", str(work / "model"),
        "--base", job["base"],
        "--result", str(work / "result.json"),
        "--checkpoint-dir", str(work / "checkpoints"),
    ]  # fmt: skip
    if job.get("tracking_uri") and job.get("run_id"):
        argv += ["--tracking-uri", job["tracking_uri"], "--run-id", job["run_id"]]
    cmd = torchrun_argv(pet, argv)
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    if local_root is not None or node_rank != 0:
        return subprocess.call(cmd, env=child_env)
    with CheckpointSync(work / "checkpoints", store.child("checkpoints")):
        code = subprocess.call(cmd, env=child_env)
    if code == 0:
        store.push_tree(work / "model", "model")
        store.put(work / "result.json", "result.json")
    return code


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pairflow.stages.train.node")
    p.add_argument("--shared", required=True, help="Job folder: s3:// prefix or mounted path.")
    p.add_argument("--scratch", default="", help="Local work folder on S3 (default: a temp dir).")
    args = p.parse_args(argv)
    try:
        if args.scratch:
            return run_node(args.shared, Path(args.scratch))
        with tempfile.TemporaryDirectory(prefix="pairflow-node-") as tmp:
            return run_node(args.shared, Path(tmp))
    except PairflowError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
