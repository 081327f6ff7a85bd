"""The committed KFP IR is current, and its DAG has the shape the mission asks for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from pairflow.compile import compile_all, compile_pipeline
from pairflow.config import PairflowConfig, load_config, pipeline_params

REPO = Path(__file__).resolve().parents[2]
COMMITTED = REPO / "pipelines" / "compiled" / "retrain.yaml"


@pytest.fixture(scope="module")
def ir() -> dict[str, Any]:
    data = next(yaml.safe_load_all(COMMITTED.read_text()))  # then the platform spec document
    assert isinstance(data, dict)
    return data


def test_committed_yaml_is_current(tmp_path: Path) -> None:
    """Both packages `pairflow compile` writes: retrain.yaml and monitor.yaml beside it."""
    fresh = compile_all(PairflowConfig(), tmp_path / "retrain.yaml")
    assert [p.name for p in fresh] == ["retrain.yaml", "monitor.yaml"]
    for path in fresh:
        committed = COMMITTED.with_name(path.name)
        assert path.read_text() == committed.read_text(), (
            f"pipelines/compiled/{path.name} is stale: run `make compile` and commit it"
        )


def test_retrain_package_cannot_take_the_monitor_name(tmp_path: Path) -> None:
    """Writing retrain as monitor.yaml would be overwritten by the monitor package: refused
    before anything is written."""
    with pytest.raises(ValueError, match=r"cannot be named monitor\.yaml"):
        compile_all(PairflowConfig(), tmp_path / "monitor.yaml")
    assert list(tmp_path.iterdir()) == []


def test_parameters_come_from_the_config(ir: dict[str, Any]) -> None:
    declared = ir["root"]["inputDefinitions"]["parameters"]
    expected = {p.name: p for p in pipeline_params()}
    assert set(declared) == set(expected)
    shards = declared["data_shards"]
    assert shards["parameterType"] == "NUMBER_INTEGER"
    assert shards["defaultValue"] == PairflowConfig().data.shards
    assert expected["data_shards"].title in shards["description"]
    assert declared["compress_int8"]["parameterType"] == "BOOLEAN"


def _tasks(ir: dict[str, Any], component: str) -> dict[str, Any]:
    tasks: dict[str, Any] = ir["components"][component]["dag"]["tasks"]
    return tasks


def _sub(ir: dict[str, Any], task: dict[str, Any]) -> dict[str, Any]:
    return _tasks(ir, task["componentRef"]["name"])


def test_dag_shape(ir: dict[str, Any]) -> None:
    root = ir["root"]["dag"]["tasks"]
    exit_tasks = [n for n in root if n.startswith("exit-handler")]
    assert len(exit_tasks) == 1 and set(root) == {exit_tasks[0], "finalize"}
    assert root["finalize"]["triggerPolicy"]["strategy"] == "ALL_UPSTREAM_TASKS_COMPLETED"
    body = _sub(ir, root[exit_tasks[0]])
    loops = {n: t for n, t in body.items() if "parameterIterator" in t}
    conditions = {n: t for n, t in body.items() if t.get("triggerPolicy", {}).get("condition")}
    steps = set(body) - set(loops) - set(conditions)
    assert steps == {
        "resolve-config",
        "ingest",
        "data-contract",
        "dedupe",
        "gather-filtered",
        "train",
        "evaluate",
    }
    # two fan-outs over the shard ids that ingest returns
    assert sorted(sorted(_sub(ir, t)) for t in loops.values()) == [["clip-filter"], ["validate"]]
    for loop in loops.values():
        assert loop["parameterIterator"]["items"]["inputParameter"].endswith("ingest-Output")
    # the gate: compress → register → deploy only when evaluate's output is true
    (cond,) = conditions.values()
    assert "evaluate-Output" in cond["triggerPolicy"]["condition"]
    gated = _sub(ir, cond)
    assert set(gated) == {"compress", "register", "deploy"}
    assert "compress" in gated["register"]["dependentTasks"]
    assert "register" in gated["deploy"]["dependentTasks"]
    assert "gather-filtered" in body["train"]["dependentTasks"]
    assert "train" in body["evaluate"]["dependentTasks"]
    assert "dedupe" in body["gather-filtered"]["dependentTasks"]
    assert "data-contract" in body["dedupe"]["dependentTasks"]


def _gated(ir: dict[str, Any]) -> dict[str, Any]:
    root = ir["root"]["dag"]["tasks"]
    body = _sub(ir, next(t for n, t in root.items() if n.startswith("exit-handler")))
    cond = next(t for t in body.values() if t.get("triggerPolicy", {}).get("condition"))
    return _sub(ir, cond)


def test_retries_and_caching(ir: dict[str, Any]) -> None:
    root = ir["root"]["dag"]["tasks"]
    body = _sub(ir, next(t for n, t in root.items() if n.startswith("exit-handler")))
    gated = _gated(ir)
    # I/O-bound or reading state outside their inputs (the source, the champion, the registry)
    stateful = (body["ingest"], body["resolve-config"], body["evaluate"])
    for task in (*stateful, gated["register"], gated["deploy"]):
        assert task["retryPolicy"]["maxRetryCount"] == 3
        assert task["cachingOptions"].get("enableCache", False) is False
    for task in (body["dedupe"], body["train"], gated["compress"]):
        assert task["cachingOptions"]["enableCache"] is True


def test_base_image_comes_from_config(tmp_path: Path) -> None:
    cfg = load_config(None, ["kubeflow.base_image=registry.example/pairflow-runtime@sha256:abc"])
    out = compile_pipeline(cfg, tmp_path / "r.yaml")
    executors = next(yaml.safe_load_all(out.read_text()))["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values()}
    assert images == {"registry.example/pairflow-runtime@sha256:abc"}
    commands = " ".join(" ".join(e["container"]["command"]) for e in executors.values())
    assert "pip install" not in commands  # the runtime image already has pairflow and kfp
