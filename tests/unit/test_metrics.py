"""Each stage's report metrics are a typed model: what a stage writes reads back as its model
with the same JSON, and metrics that do not match their model fail, naming stage and field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pairflow.config import load_config
from pairflow.demo.synthetic import generate_dataset
from pairflow.metrics import (
    STAGE_METRICS,
    ClipFilterMetrics,
    DedupeMetrics,
    DeployMetrics,
    EvaluateMetrics,
    IngestMetrics,
    MetricsError,
    RegisterMetrics,
    StageMetrics,
    TrainMetrics,
    ValidateMetrics,
)
from pairflow.report import StageOutputs, StageReport
from pairflow.summary import STAGE_ORDER


def _written(path: Path) -> dict[str, Any]:
    metrics: dict[str, Any] = json.loads(path.read_text())["metrics"]
    return metrics


def test_every_stage_of_the_dag_has_a_metrics_model() -> None:
    assert set(STAGE_METRICS) == set(STAGE_ORDER)


def test_reports_written_by_the_stages_read_back_as_their_models(tmp_path: Path) -> None:
    from pairflow.stage_io import ShardInputs
    from pairflow.stages.dedupe.step import DedupeInputs
    from pairflow.stages.dedupe.step import run as dedupe
    from pairflow.stages.deploy.step import DeployInputs, DeployOutputs
    from pairflow.stages.deploy.step import run as deploy
    from pairflow.stages.ingest.ingest import run_ingest
    from pairflow.stages.validate.step import run_shard

    data = generate_dataset(tmp_path / "data", 24, seed=5, image_size=32)
    cfg = load_config(None, [f"data.source={data.manifest}", "data.shards=1"])
    ingest = StageOutputs.in_dir(tmp_path / "ingest")
    run_ingest("", ingest, cfg.data)
    validate = StageOutputs.in_dir(tmp_path / "validate")
    run_shard(cfg, ShardInputs(str(ingest.kept), 0), validate)
    dedupe_out = StageOutputs.in_dir(tmp_path / "dedupe")
    dedupe(cfg, DedupeInputs(str(validate.kept)), dedupe_out)
    off = load_config(None, ["deploy.enabled=false"])
    deploy_out = DeployOutputs.in_dir(tmp_path / "deploy")
    deploy(off, DeployInputs(str(dedupe_out.kept), ""), deploy_out)

    written: list[tuple[Path, type[StageMetrics]]] = [
        (ingest.report, IngestMetrics),
        (validate.report, ValidateMetrics),
        (dedupe_out.report, DedupeMetrics),
        (deploy_out.report, DeployMetrics),
    ]
    for path, model in written:
        report = StageReport.read(path)
        typed = report.metrics_as(model)
        assert typed.to_json() == _written(path), path  # same keys, same values
    ing = StageReport.read(ingest.report).metrics_as(IngestMetrics)
    assert ing.source == str(data.manifest) and sum(ing.sources.values()) == 24
    val = StageReport.read(validate.report).metrics_as(ValidateMetrics)
    assert val.workers is not None and val.workers >= 1 and val.contract is None
    ded = StageReport.read(dedupe_out.report).metrics_as(DedupeMetrics)
    assert ded.rows_in == StageReport.read(validate.report).rows_out
    assert ded.exact is not None  # the exact pass ran and recorded its figures
    dep = StageReport.read(deploy_out.report).metrics_as(DeployMetrics)
    assert (dep.decision, dep.reasons) == ("disabled", ["deploy.enabled is false"])
    assert set(_written(deploy_out.report)) == {"decision", "reasons"}  # nothing added


def test_model_stage_metrics_keep_their_json_keys() -> None:
    from pairflow.stages.register.register_version import RegisterResult
    from pairflow.stages.register.step import report_metrics

    result = RegisterResult("m", "3", "run1", "mid", "passed", True, False)
    assert report_metrics(result).to_json() == {
        "registered_version": "models:/m/3",
        "model_name": "m",
        "version": "3",
        "gate": "passed",
        "challenger": True,
        "reused": False,
        "mlflow_run_id": "run1",
        "model_id": "mid",
    }
    # optional figures a stage did not write stay absent; ints stay ints
    shard = ClipFilterMetrics(scored=3, rows_per_s=12, cut=None)
    assert shard.to_json() == {"scored": 3, "rows_per_s": 12, "cut": None}
    assert "roc_auc" not in shard.to_json()
    # dotted JSON keys (drift's embedding AUCs) read as fields and write back unchanged
    ev = EvaluateMetrics.model_validate(
        {"drift": {"detected": True, "embedding_auc.image": 0.9}, "candidate": {"acc@k": 0.5}}
    )
    assert ev.drift is not None and ev.drift.embedding_auc_image == 0.9
    assert ev.candidate.get("acc@k") == 0.5 and "acc@k" in ev.candidate
    assert ev.to_json() == {
        "drift": {"detected": True, "embedding_auc.image": 0.9},
        "candidate": {"acc@k": 0.5},
    }


def test_metrics_that_do_not_match_their_model_fail_naming_stage_and_field(
    tmp_path: Path,
) -> None:
    path = tmp_path / "report.json"
    bad = StageReport(
        stage="evaluate",
        rows_in=3,
        rows_out=3,
        metrics={"gate": {"passed": "perhaps", "reasons": []}},
    )
    with pytest.raises(MetricsError, match=r"stage 'evaluate'.*metrics\.gate\.passed"):
        bad.write(path)
    assert not path.exists()
    data = bad.to_json_dict()
    path.write_text(json.dumps(data))
    with pytest.raises(MetricsError) as err:
        StageReport.read(path)
    message = str(err.value)
    assert str(path) in message and "stage 'evaluate'" in message
    assert "metrics.gate.passed" in message and "EvaluateMetrics" in message
    with pytest.raises(MetricsError, match=r"stage 'evaluate'.*metrics\.gate\.passed"):
        bad.metrics_as(EvaluateMetrics)
    # a required figure missing, and a report read as another stage's model
    train = StageReport(stage="train", rows_in=1, rows_out=1, metrics={"model": "clip"})
    with pytest.raises(MetricsError, match=r"stage 'train'.*metrics\.rows_train: Field required"):
        train.metrics_as(TrainMetrics)
    ok = StageReport(stage="evaluate", rows_in=1, rows_out=1)
    with pytest.raises(MetricsError, match="EvaluateMetrics, not RegisterMetrics"):
        ok.metrics_as(RegisterMetrics)
    assert MetricsError.exit_code == 2  # a user-facing error: one line, no traceback
