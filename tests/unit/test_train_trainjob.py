"""TrainJob body, the wait/cleanup logic and failed pods' reasons.

No Kubernetes cluster is available here: the wait/cleanup tests use a fake CustomObjectsApi
(an in-memory object store whose status advances per poll; like the API server with the
Trainer CRD installed it rejects a body that fails the upstream TrainJob schema, Trainer v2.3.0
in manifests/schemas) and a fake clock; failed pods are ``kubernetes.client`` V1Pod models.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes.client import (
    V1ContainerState,
    V1ContainerStateTerminated,
    V1ContainerStateWaiting,
    V1ContainerStatus,
    V1ObjectMeta,
    V1Pod,
    V1PodList,
    V1PodStatus,
)
from tests.manifests_render import crd_errors, find_object, render_overlay

from pairflow.config import load_config
from pairflow.kubeflow import names
from pairflow.stages.train.cluster import plan_job
from pairflow.stages.train.launch import WorkerArgs
from pairflow.stages.train.settings import TrainJobConfig
from pairflow.stages.train.trainjob import (
    JOBSET_LABEL,
    TrainJobError,
    failed_pod_reasons,
    job_name,
    node_command,
    run_trainjob,
    trainjob_body,
)


def test_body_matches_the_v1alpha1_crd_and_the_manifests() -> None:
    cfg = TrainJobConfig(gpus_per_node=2, cpu="4", memory="16Gi", env={"A": "1"}, nproc_per_node=2)
    body = trainjob_body(
        "job-1", cfg, num_nodes=3, image="reg/img@sha256:abc",
        command=node_command("s3://b/jobs/job-1"), env={"B": "2"},
    )  # fmt: skip
    assert crd_errors(body) == []
    runtime = find_object(render_overlay("prod"), "ClusterTrainingRuntime")
    assert body["metadata"]["namespace"] == names.NAMESPACE
    spec = body["spec"]
    assert spec["runtimeRef"] == {
        "name": runtime["metadata"]["name"],
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    tr = spec["trainer"]
    assert tr["numNodes"] == 3 and tr["numProcPerNode"] == 2 and tr["image"] == "reg/img@sha256:abc"
    assert tr["command"] == [
        "python",
        "-m",
        "pairflow.stages.train.node",
        "--shared",
        "s3://b/jobs/job-1",
    ]
    assert tr["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2"
    assert tr["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    cpu = trainjob_body("j", TrainJobConfig(), num_nodes=1, image="i", command=["x"])
    assert "nvidia.com/gpu" not in cpu["spec"]["trainer"]["resourcesPerNode"]["limits"]
    with pytest.raises(TrainJobError, match="image"):
        trainjob_body("j", TrainJobConfig(), num_nodes=1, image="", command=["x"])
    with pytest.raises(TrainJobError, match="PET_NODE_RANK"):
        trainjob_body("j", TrainJobConfig(env={"PET_NODE_RANK": "0"}), num_nodes=1, image="i",
                      command=["x"])  # fmt: skip


def test_plan_needs_shared_storage_and_whole_nodes(tmp_path: Any) -> None:
    args = WorkerArgs(tmp_path / "c.json", "m.parquet", tmp_path / "m", "", None, tmp_path / "r")
    cfg = load_config(None, ["train.launcher=trainjob", "train.world_size=4"])
    with pytest.raises(TrainJobError, match="shared_dir is empty"):
        plan_job(cfg, args, "")
    cfg = load_config(None, ["train.trainjob.shared_dir=s3://b/jobs", "train.world_size=3",
                             "train.trainjob.nproc_per_node=2"])  # fmt: skip
    with pytest.raises(TrainJobError, match="not a multiple"):
        plan_job(cfg, args, "")
    cfg = load_config(None, ["train.trainjob.shared_dir=s3://b/jobs", "train.world_size=4",
                             "train.trainjob.nproc_per_node=2"])  # fmt: skip
    plan = plan_job(cfg, args, "run-1")
    assert plan.body["spec"]["trainer"]["numNodes"] == 2
    assert plan.store.root == f"s3://b/jobs/{plan.name}"
    assert crd_errors(plan.body) == []


def test_job_name_is_dns_safe() -> None:
    name = job_name("pairflow-train", "Run_ABC123456789")
    assert name.startswith("pairflow-train-run-abc1") and len(name) <= 63 and name == name.lower()


class FakeCustomObjects:
    """In-memory CustomObjectsApi: the job reaches ``final`` after ``polls`` gets."""

    def __init__(self, final: str | None, polls: int = 2) -> None:
        self.final, self.polls = final, polls
        self.objects: dict[str, dict[str, Any]] = {}
        self.deleted: list[str] = []
        self.gets = 0

    def create_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, body: dict[str, Any]
    ) -> Any:
        assert (group, version, plural) == ("trainer.kubeflow.org", "v1alpha1", "trainjobs")
        errors = crd_errors(body)
        assert not errors, errors  # the API server would answer 422
        self.objects[body["metadata"]["name"]] = body
        return body

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any:
        self.gets += 1
        obj = dict(self.objects[name])
        if self.final and self.gets >= self.polls:
            obj["status"] = {
                "conditions": [
                    {"type": "Created", "status": "True"},
                    {"type": self.final, "status": "True", "message": f"job {self.final.lower()}"},
                ]
            }
        return obj

    def delete_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> Any:
        self.deleted.append(name)
        self.objects.pop(name)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


def _run(api: FakeCustomObjects, cfg: TrainJobConfig, lines: list[str]) -> Any:
    body = trainjob_body("job-x", cfg, num_nodes=1, image="i", command=["x"])
    clock = FakeClock()
    return run_trainjob(
        api,
        body,
        cfg,
        on_line=lines.append,
        logs=lambda n: [f"log of {n}"],
        clock=clock,
        sleep=clock.sleep,
    )


def test_complete_job_is_waited_for_and_cleaned_up() -> None:
    lines: list[str] = []
    api = FakeCustomObjects("Complete", polls=3)
    outcome = _run(api, TrainJobConfig(poll_s=5), lines)
    assert outcome.state == "Complete" and api.gets == 3 and outcome.seconds == 10
    assert api.deleted == ["job-x"] and lines.count("log of job-x") == 3


def _pod(name: str, status: V1PodStatus) -> V1Pod:
    return V1Pod(metadata=V1ObjectMeta(name=name, labels={JOBSET_LABEL: "job-x"}), status=status)


class FakeCore:
    """``CoreV1Api.list_namespaced_pod`` over a fixed list of pods (label selector checked)."""

    def __init__(self, pods: list[V1Pod]) -> None:
        self.pods = pods

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> V1PodList:
        assert label_selector == f"{JOBSET_LABEL}=job-x"
        return V1PodList(items=self.pods)


def test_failed_job_names_the_failed_pods_reason_after_cleanup() -> None:
    oom = V1ContainerStatus(
        name="node", image="i", image_id="", ready=False, restart_count=0,
        state=V1ContainerState(terminated=V1ContainerStateTerminated(
            exit_code=137, reason="OOMKilled", message="")),
    )  # fmt: skip
    err = V1ContainerStatus(
        name="node", image="i", image_id="", ready=False, restart_count=0,
        state=V1ContainerState(terminated=V1ContainerStateTerminated(
            exit_code=1, reason="Error", message="Traceback...\nerror: no training rows")),
    )  # fmt: skip
    pull = V1ContainerStatus(
        name="node", image="i", image_id="", ready=False, restart_count=0,
        state=V1ContainerState(waiting=V1ContainerStateWaiting(
            reason="ImagePullBackOff", message="not found")),
    )  # fmt: skip
    ok = V1ContainerStatus(
        name="node", image="i", image_id="", ready=True, restart_count=0,
        state=V1ContainerState(terminated=V1ContainerStateTerminated(exit_code=0)),
    )  # fmt: skip
    core = FakeCore([
        _pod("job-x-node-0-0", V1PodStatus(phase="Failed", container_statuses=[oom])),
        _pod("job-x-node-0-1", V1PodStatus(phase="Failed", container_statuses=[err])),
        _pod("job-x-node-0-2", V1PodStatus(phase="Pending", container_statuses=[pull])),
        _pod("job-x-node-0-3", V1PodStatus(phase="Succeeded", container_statuses=[ok])),
    ])  # fmt: skip
    reasons = failed_pod_reasons(core, "pairflow", "job-x")
    assert reasons == [
        "job-x-node-0-0/node: OOMKilled (exit 137)",
        "job-x-node-0-1/node: Error (exit 1): error: no training rows",
        "job-x-node-0-2/node: ImagePullBackOff: not found",
    ]
    api = FakeCustomObjects("Failed")
    body = trainjob_body("job-x", TrainJobConfig(), num_nodes=1, image="i", command=["x"])
    clock = FakeClock()
    with pytest.raises(TrainJobError, match=r"failed: job failed; .*OOMKilled \(exit 137\)"):
        run_trainjob(
            api, body, TrainJobConfig(), on_line=lambda _: None,
            pod_failures=lambda n: failed_pod_reasons(core, "pairflow", n),
            clock=clock, sleep=clock.sleep,
        )  # fmt: skip
    assert api.deleted == ["job-x"]


def test_timeout_raises_and_cleanup_can_be_disabled() -> None:
    lines: list[str] = []
    api = FakeCustomObjects(None)
    with pytest.raises(TrainJobError, match="not finished after 30 s"):
        _run(api, TrainJobConfig(timeout_s=30, poll_s=10, cleanup=False), lines)
    assert api.deleted == [] and "job-x" in api.objects


def test_cli_dry_run_prints_the_trainjob_as_yaml(tmp_path: Any) -> None:
    import yaml
    from typer.testing import CliRunner

    from pairflow.cli import app

    argv = ["train", "--input", "m.parquet", "--out", str(tmp_path / "o"), "--launcher",
            "trainjob", "--dry-run", "--set", "train.trainjob.shared_dir=s3://b/jobs",
            "--set", "train.trainjob.image=reg/pairflow-trainer@sha256:" + "0" * 64]  # fmt: skip
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 0, res.output
    assert res.output.startswith("# job folder s3://b/jobs/pairflow-train-")
    body = yaml.safe_load(res.output)
    assert body["kind"] == "TrainJob" and crd_errors(body) == []
    assert body["spec"]["trainer"]["command"][:4] == [
        "python",
        "-m",
        "pairflow.stages.train.node",
        "--shared",
    ]
    assert not (tmp_path / "o").exists()  # nothing written, nothing sent
    res = CliRunner().invoke(app, ["train", "--input", "m", "--out", "o", "--dry-run"])
    assert res.exit_code != 0 and "--launcher trainjob" in str(res.exception)


def test_node_entry_needs_the_trainer_env_and_worker_needs_torchrun(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pairflow.errors import PairflowError
    from pairflow.models.loop import init_distributed
    from pairflow.stages.train.node import NodeError, pet_env, torchrun_argv

    with pytest.raises(NodeError, match="missing PET_NODE_RANK, PET_MASTER_ADDR"):
        pet_env({"PET_NNODES": "2", "PET_NPROC_PER_NODE": "1", "PET_MASTER_PORT": "29400"})
    pet = {"PET_NNODES": "2", "PET_NPROC_PER_NODE": "auto", "PET_NODE_RANK": "1",
           "PET_MASTER_ADDR": "j-node-0-0.j", "PET_MASTER_PORT": "29400"}  # fmt: skip
    argv = torchrun_argv(pet_env(pet), ["--out", "m"])
    i = argv.index("torch.distributed.run")
    assert argv[i + 1 : i + 11] == ["--nnodes", "2", "--nproc_per_node", "auto", "--node_rank",
                                    "1", "--master_addr", "j-node-0-0.j", "--master_port",
                                    "29400"]  # fmt: skip
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("PET_NNODES", "2")
    with pytest.raises(PairflowError, match="under torchrun"):
        init_distributed()
