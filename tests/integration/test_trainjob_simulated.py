"""The TrainJob launcher, simulated faithfully: no cluster, but the real pod command and env.

The train step's own code plans the TrainJob and stages its job folder on S3 (a real moto
server). The runtime is the ClusterTrainingRuntime the real kustomize renders from manifests/.
Each pod's container env is computed as Kubeflow Trainer v2.3.0's torch plugin computes it
(``pkg/runtime/framework/plugins/torch/torch.go`` ``Torch.EnforceMLPolicy``):

- the runtime's ``node`` container env (``envFrom`` ConfigMap and ``secretKeyRef`` resolved the
  way the kubelet would, from the rendered ConfigMap and a test Secret), upserted with
  ``spec.trainer.env``;
- ``PET_NNODES`` = ``spec.trainer.numNodes``; ``PET_NPROC_PER_NODE`` =
  ``spec.trainer.numProcPerNode`` (``auto`` without GPUs → the CPU request, at least 1);
  ``PET_NODE_RANK`` = the pod's Job completion index; ``PET_MASTER_ADDR`` =
  ``<job>-node-0-0.<job>``; ``PET_MASTER_PORT`` = 29400 (``constants.ContainerTrainerPort``).

Two substitutions stand in for the cluster network: the master address (the headless Service
name of pod 0) resolves to 127.0.0.1 here, and port 29400 becomes a free port (other tests may
hold 29400). Each node then runs ``spec.trainer.command`` as its own local process group.
"""

from __future__ import annotations

import ast
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from safetensors.torch import load_file
from tests.manifests_render import find_object, render_overlay

from pairflow.config import PairflowConfig, load_config
from pairflow.data import s3 as s3io
from pairflow.demo.synthetic import generate_dataset
from pairflow.models.scratch import save_untrained_clip
from pairflow.stages.train.cluster import fetch_outputs, plan_job, stage_inputs
from pairflow.stages.train.launch import WorkerArgs, run_torchrun

pytestmark = pytest.mark.slow

TRAINER_PORT = 29400  # kubeflow/trainer pkg/constants ContainerTrainerPort
SECRETS = {"pairflow-s3": {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _trainer_container(runtime: dict[str, Any]) -> dict[str, Any]:
    """The container the plugin targets: ancestor ``trainer`` replicated job, name ``node``."""
    for rj in runtime["spec"]["template"]["spec"]["replicatedJobs"]:
        labels = rj["template"].get("metadata", {}).get("labels", {})
        if labels.get("trainer.kubeflow.org/trainjob-ancestor-step") == "trainer":
            pod = rj["template"]["spec"]["template"]["spec"]
            (node,) = [c for c in pod["containers"] if c["name"] == "node"]
            return dict(node)
    raise AssertionError("runtime has no replicated job with ancestor label 'trainer'")


def _cpu_count(quantity: str) -> int:
    return int(quantity[:-1]) // 1000 if quantity.endswith("m") else int(float(quantity))


def pod_env(
    trainjob: dict[str, Any], runtime: dict[str, Any], objs: list[dict[str, Any]], index: int
) -> dict[str, str]:
    """The ``node`` container env of pod ``index``, as the torch plugin and kubelet set it."""
    container = _trainer_container(runtime)
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        cm = find_object(objs, "ConfigMap", src["configMapRef"]["name"])
        env.update(cm["data"])
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = SECRETS[ref["name"]][ref["key"]]
    trainer = trainjob["spec"]["trainer"]
    env.update({e["name"]: e["value"] for e in trainer.get("env", [])})  # UpsertEnvVars
    nodes = trainer.get("numNodes", runtime["spec"]["mlPolicy"].get("numNodes", 1))
    nproc: Any = trainer.get("numProcPerNode", "auto")
    gpus = int(trainer.get("resourcesPerNode", {}).get("limits", {}).get("nvidia.com/gpu", 0))
    if nproc == "auto" and gpus == 0:
        cpu = trainer.get("resourcesPerNode", {}).get("requests", {}).get("cpu", "0")
        nproc = max(1, _cpu_count(cpu))
    name = trainjob["metadata"]["name"]
    env.update(
        {
            "PET_NNODES": str(nodes),
            "PET_NPROC_PER_NODE": str(nproc),
            "PET_NODE_RANK": str(index),
            "PET_MASTER_ADDR": f"{name}-node-0-0.{name}",
            "PET_MASTER_PORT": str(TRAINER_PORT),
        }
    )
    return env


def _local_network(env: dict[str, str], port: int) -> dict[str, str]:
    """Pod 0's DNS name → 127.0.0.1, port 29400 → a free port (see module doc)."""
    return {**env, "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(port)}


def start_pods(
    trainjob: dict[str, Any],
    runtime: dict[str, Any],
    objs: list[dict[str, Any]],
    endpoint: str,
    tmp: Path,
) -> list[subprocess.Popen[str]]:
    """One process group per pod; pod ``i``'s local disk (TMPDIR) is ``tmp/node-i``."""
    port = _free_port()
    command = list(trainjob["spec"]["trainer"]["command"])
    assert command[0] == "python"
    procs = []
    for index in range(int(trainjob["spec"]["trainer"]["numNodes"])):
        env = _local_network(pod_env(trainjob, runtime, objs, index), port)
        env["AWS_ENDPOINT_URL"] = endpoint  # the cluster ConfigMap names MinIO; here moto
        base = {k: os.environ[k] for k in ("PATH", "HOME", "PAIRFLOW_CACHE") if k in os.environ}
        (tmp / f"node-{index}").mkdir(parents=True, exist_ok=True)
        env["TMPDIR"] = str(tmp / f"node-{index}")
        procs.append(
            subprocess.Popen(
                [sys.executable, *command[1:]],
                env={**base, "OMP_NUM_THREADS": "1", **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    return procs


def kill_pod(proc: subprocess.Popen[str]) -> None:
    """SIGKILL every process of the pod, as the kubelet ends a pod's cgroup (torchrun starts
    its workers in their own sessions, so the process group alone is not enough)."""
    import psutil  # type: ignore[import-untyped]

    root = psutil.Process(proc.pid)
    for p in [root, *root.children(recursive=True)]:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            continue


def wait_pods(procs: list[subprocess.Popen[str]], timeout: float = 180) -> list[str]:
    logs = []
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_pod(proc)
            out, _ = proc.communicate()
        logs.append(out)
    return logs


def epoch_lines(log: str) -> list[dict[str, float]]:
    """The per-rank ``epoch i/n: {metrics}`` log lines (validation on the rank's replica)."""
    return [ast.literal_eval(m) for m in re.findall(r"epoch \d+/\d+: (\{.*\})", log)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("trainjob-data")
    gen = generate_dataset(root / "data", 320, seed=5, defects=False)
    df = pd.read_parquet(gen.manifest)
    df["image"] = [str((gen.manifest.parent / p).resolve()) for p in df["image"]]
    manifest = root / "curated.parquet"
    df.to_parquet(manifest)
    return manifest, save_untrained_clip(root / "base", list(df["caption"]), seed=0)


def _cfg(bucket: str, endpoint: str, epochs: int, checkpoint_every: int = 2) -> PairflowConfig:
    return load_config(
        None,
        [
            "train.launcher=trainjob",
            "train.world_size=2",
            "train.trainjob.nproc_per_node=1",
            f"train.trainjob.shared_dir=s3://{bucket}/jobs",
            f"data.s3.endpoint_url={endpoint}",
            f"train.epochs={epochs}",
            "train.batch_size=8",
            f"train.checkpoint_every={checkpoint_every}",
            "train.num_workers=0",
            "train.patience=9",
        ],
    )


def _args(cfg: PairflowConfig, manifest: Path, base: Path, work: Path) -> WorkerArgs:
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(cfg.to_json())
    return WorkerArgs(
        config=work / "config.json",
        manifest=str(manifest),
        out=work / "model",
        base=str(base),
        checkpoint_dir=work / "checkpoints",
        result=work / "result.json",
    )


def _weights(model_dir: Path) -> dict[str, Any]:
    return load_file(str(model_dir / "model.safetensors"))


def test_two_nodes_train_as_one_job_equal_to_two_process_torchrun(
    data: tuple[Path, Path], s3_bucket: str, moto_server: str, tmp_path: Path
) -> None:
    manifest, base = data
    cfg = _cfg(s3_bucket, moto_server, epochs=2)
    objs = render_overlay("dev")
    runtime = find_object(objs, "ClusterTrainingRuntime", cfg.train.trainjob.runtime)
    args = _args(cfg, manifest, base, tmp_path / "job")
    plan = plan_job(cfg, args, "run-sim")
    stage_inputs(plan, args)
    assert plan.body["spec"]["trainer"]["numNodes"] == 2

    logs = wait_pods(start_pods(plan.body, runtime, objs, moto_server, tmp_path / "pods"))
    assert all("[pairflow-node]" in log for log in logs), logs[1][-2000:]
    fetched = fetch_outputs(plan, args)
    result = json.loads(Path(fetched.result).read_text())
    assert result["world_size"] == 2
    # every rank evaluates its own replica: one job means the ranks agree on every epoch
    per_node = [epoch_lines(log) for log in logs]
    assert len(per_node[0]) == 2 and per_node[0] == per_node[1], per_node
    assert per_node[0] == [{k: v for k, v in h.items()} for h in result["history"]]
    # one checkpoint set, under the job folder on S3
    keys = s3io.list_keys(plan.store.uri("checkpoints"), cfg.data.s3)
    latest = s3io.get_bytes(plan.store.uri("checkpoints/LATEST"), cfg.data.s3).decode().strip()
    sets = {k.split("/checkpoints/")[1].split("/")[0] for k in keys} - {"LATEST"}
    assert sets == {latest}, sets

    # the same job as one 2-process torchrun (the local launcher), same seed
    ref = _args(cfg, manifest, base, tmp_path / "torchrun")
    run_torchrun(2, ref, on_line=lambda _: None)
    expected = json.loads(Path(ref.result).read_text())
    assert expected["world_size"] == 2
    assert result["history"] == expected["history"] and result["steps"] == expected["steps"]
    wa, wb = _weights(Path(fetched.out)), _weights(ref.out)
    assert wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


def test_node_killed_mid_epoch_then_rerun_resumes_from_shared_storage(
    data: tuple[Path, Path], s3_bucket: str, moto_server: str, tmp_path: Path
) -> None:
    manifest, base = data
    # a checkpoint after every step: the job is still early when node 1 is killed
    cfg = _cfg(s3_bucket, moto_server, epochs=3, checkpoint_every=1)
    objs = render_overlay("dev")
    runtime = find_object(objs, "ClusterTrainingRuntime", cfg.train.trainjob.runtime)
    args = _args(cfg, manifest, base, tmp_path / "job")
    plan = plan_job(cfg, args, "run-kill")
    stage_inputs(plan, args)

    pods = tmp_path / "pods"
    procs = start_pods(plan.body, runtime, objs, moto_server, pods)
    deadline = time.monotonic() + 300
    # node 0's rank 0 writes its first checkpoint on its local disk...
    while not list((pods / "node-0").glob("pairflow-node-*/checkpoints/LATEST")):
        assert all(p.poll() is None for p in procs), "the job ended before any checkpoint"
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.02)
    kill_pod(procs[1])  # ...and node 1's pod dies mid-run
    logs = wait_pods(procs)
    assert procs[1].returncode != 0 and procs[0].returncode != 0, logs[0][-2000:]
    assert not plan.store.exists("result.json")
    # node 0 copied its newest complete checkpoint to S3 before its pod ended
    killed_at = s3io.get_bytes(plan.store.uri("checkpoints/LATEST"), cfg.data.s3).decode()

    # the Trainer (JobSet) restarts the pods: same command, same env, fresh local disks
    logs = wait_pods(start_pods(plan.body, runtime, objs, moto_server, tmp_path / "rerun"))
    assert "checkpoint files restored" in logs[1]
    result = json.loads(Path(fetch_outputs(plan, args).result).read_text())
    resumed = result["resumed_from_step"]
    assert resumed is not None and 0 < resumed < result["steps"], result
    assert killed_at.strip() == f"step-{resumed:08d}"  # the set node 0 left on S3
    assert result["world_size"] == 2 and result["epochs_run"] == 3
