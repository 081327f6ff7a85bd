"""TrainJob body and the wait/cleanup logic.

No Kubernetes cluster is available here: the wait/cleanup tests use a fake CustomObjectsApi
(an in-memory object store whose status advances per poll) and a fake clock.
"""

from __future__ import annotations

from typing import Any

import pytest

from pairflow.train.settings import TrainJobConfig
from pairflow.train.trainjob import TrainJobError, job_name, run_trainjob, trainjob_body


def test_body_matches_v1alpha1_fields() -> None:
    cfg = TrainJobConfig(namespace="ml", gpus_per_node=2, cpu="4", memory="16Gi", env={"A": "1"})
    body = trainjob_body(
        "job-1",
        cfg,
        num_nodes=3,
        image="reg/img@sha256:abc",
        worker_argv=["--out", "/m"],
        env={"B": "2"},
    )
    assert body["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and body["kind"] == "TrainJob"
    assert body["metadata"]["namespace"] == "ml"
    spec = body["spec"]
    assert spec["runtimeRef"] == {
        "name": "torch-distributed",
        "apiGroup": "trainer.kubeflow.org",
        "kind": "ClusterTrainingRuntime",
    }
    tr = spec["trainer"]
    assert tr["numNodes"] == 3 and tr["image"] == "reg/img@sha256:abc"
    assert tr["command"] == ["python", "-m", "pairflow.train", "--out", "/m"]
    assert tr["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "2"
    assert tr["resourcesPerNode"]["requests"] == {
        "cpu": "4",
        "memory": "16Gi",
        "nvidia.com/gpu": "2",
    }
    assert tr["env"] == [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]
    cpu = trainjob_body("j", TrainJobConfig(), num_nodes=1, image="i", worker_argv=[])
    assert "nvidia.com/gpu" not in cpu["spec"]["trainer"]["resourcesPerNode"]["limits"]
    with pytest.raises(TrainJobError, match="image"):
        trainjob_body("j", TrainJobConfig(), num_nodes=1, image="", worker_argv=[])


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
    body = trainjob_body("job-x", cfg, num_nodes=1, image="i", worker_argv=[])
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


def test_failed_job_raises_after_cleanup() -> None:
    lines: list[str] = []
    api = FakeCustomObjects("Failed")
    with pytest.raises(TrainJobError, match="failed: job failed"):
        _run(api, TrainJobConfig(), lines)
    assert api.deleted == ["job-x"]


def test_timeout_raises_and_cleanup_can_be_disabled() -> None:
    lines: list[str] = []
    api = FakeCustomObjects(None)
    with pytest.raises(TrainJobError, match="not finished after 30 s"):
        _run(api, TrainJobConfig(timeout_s=30, poll_s=10, cleanup=False), lines)
    assert api.deleted == [] and "job-x" in api.objects
