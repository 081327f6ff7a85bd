"""Curate steps end to end on generated data: ground-truth scores, sharding, failure modes.

Runs the stages' ``run`` functions the components call (ingest → validate shards → contract →
dedupe) on the config the components load, without KFP, so the checks are fast; the kfp.local
e2e test runs the same steps in the DAG.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pairflow.config import PairflowConfig
from pairflow.demo.synthetic import GenerateSummary, generate_dataset
from pairflow.errors import InputDataError
from pairflow.report import StageOutputs, StageReport
from pairflow.stage_io import GatherInputs, ShardInputs, load_step_config
from pairflow.stages.dedupe import step as dedupe_step
from pairflow.stages.ingest import step as ingest_step
from pairflow.stages.validate import step as validate_step
from pairflow.stages.validate.contract import ContractError

FILE_DEFECTS = ("corrupt_file", "zero_byte_file", "not_an_image", "missing_file")


def _curate(tmp: Path, source: Path, shards: int, **validate: object) -> dict[str, Path]:
    cfg = PairflowConfig()
    cfg.data.source = str(source)
    cfg.data.shards = shards
    cfg.validate_.workers = 1
    for key, value in validate.items():
        setattr(cfg.validate_, key, value)
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "config.json"
    config.write_text(cfg.to_json())
    loaded = load_step_config(config)  # what every component hands its stage's run
    ing = StageOutputs.in_dir(tmp / "ingest")
    ids = ingest_step.run(loaded, ingest_step.IngestInputs(), ing)
    assert ids == list(range(shards))
    vals = [StageOutputs.in_dir(tmp / f"validate-{s}") for s in ids]
    for shard, out in zip(ids, vals, strict=True):
        validate_step.run_shard(loaded, ShardInputs(str(ing.kept), shard), out)
    con = StageOutputs.in_dir(tmp / "contract")
    validate_step.run(
        loaded,
        GatherInputs(
            shard_manifests=[str(v.kept) for v in vals],
            shard_rejected=[str(v.rejected) for v in vals],
            shard_reports=[str(v.report) for v in vals],
            upstream_report=str(ing.report),
        ),
        validate_step.ContractOutputs(con, tmp / "docs.html", tmp / "docs-site"),
    )
    ded = StageOutputs.in_dir(tmp / "dedupe")
    dedupe_step.run(loaded, dedupe_step.DedupeInputs(str(con.kept)), ded)
    return {
        "ingest": ing.report,
        "contract": con.report,
        "dedupe": ded.report,
        "validated": con.kept,
        "rejected": con.rejected,
        "kept": ded.kept,
        "dedupe_rejected": ded.rejected,
        "docs": tmp / "docs.html",
    }


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> GenerateSummary:
    return generate_dataset(tmp_path_factory.mktemp("curate-data"), 400, seed=21)


def test_file_defects_are_caught_exactly(tmp_path: Path, dataset: GenerateSummary) -> None:
    out = _curate(tmp_path, dataset.manifest, shards=3)
    truth = pd.read_parquet(dataset.ground_truth)
    rejected = pd.read_parquet(out["rejected"])
    flagged = set(rejected["id"])
    for kind in FILE_DEFECTS:
        ids = set(truth.loc[truth["kind"] == kind, "id"])
        assert ids and ids <= flagged, kind  # recall 100%
    file_reasons = {"corrupt_image", "empty_file", "not_an_image", "missing_file"}
    by_reason = rejected[rejected["reason"].isin(file_reasons)]
    assert set(by_reason["id"]) == set(truth.loc[truth["kind"].isin(FILE_DEFECTS), "id"])  # prec.
    reasons = dict(zip(rejected["id"], rejected["reason"], strict=True))
    for row in truth.itertuples():
        if row.kind == "zero_byte_file":
            assert reasons[row.id] == "empty_file"
        if row.kind == "missing_file":
            assert reasons[row.id] == "missing_file"
    # rows flow: ingest → validate → dedupe with nothing lost
    ing, con, ded = (StageReport.read(out[k]) for k in ("ingest", "contract", "dedupe"))
    assert con.rows_in == ing.rows_out and ded.rows_in == con.rows_out
    assert con.metrics["contract"]["passed"] is True
    assert "expect_column_values_to_be_unique" in out["docs"].read_text()
    assert list((out["docs"].parent / "docs-site").rglob("index.html"))


def test_sharded_equals_unsharded(tmp_path: Path, dataset: GenerateSummary) -> None:
    one = _curate(tmp_path / "one", dataset.manifest, shards=1)
    many = _curate(tmp_path / "many", dataset.manifest, shards=4)
    for key in ("kept", "dedupe_rejected", "validated", "rejected"):
        a = pd.read_parquet(one[key]).sort_values("id").reset_index(drop=True)
        b = pd.read_parquet(many[key]).sort_values("id").reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_like=True)
    a_rep = json.loads(one["dedupe"].read_text())
    b_rep = json.loads(many["dedupe"].read_text())
    assert a_rep["rejected"] == b_rep["rejected"] and a_rep["rows_out"] == b_rep["rows_out"]


def test_every_row_rejected_fails_with_a_clear_message(tmp_path: Path) -> None:
    data = generate_dataset(tmp_path / "data", 30, seed=4, defects=False)
    with pytest.raises(ContractError, match=r"row_count.*observed 0"):
        _curate(tmp_path / "run", data.manifest, shards=2, max_width=20_000, min_width=10_000)


def test_zero_rows_fail_with_a_clear_message(tmp_path: Path) -> None:
    empty = tmp_path / "empty.parquet"
    pd.DataFrame(
        {"id": pd.Series(dtype=str), "image": pd.Series(dtype=str), "caption": pd.Series(dtype=str)}
    ).to_parquet(empty)
    with pytest.raises(InputDataError, match="no rows"):
        _curate(tmp_path / "run", empty, shards=2)
