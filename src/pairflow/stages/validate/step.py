"""Step 1b: validate one shard per task, then merge the shards and check the data contract."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from pairflow.config import PairflowConfig
from pairflow.data.schema import read_manifest
from pairflow.metrics import ContractSummary, ValidateMetrics
from pairflow.report import StageOutputs, StageReport, Stopwatch
from pairflow.sharding import select_shard
from pairflow.stage_io import (
    GatherInputs,
    ShardInputs,
    finish_stage,
    gather_shards,
    log_progress,
    write_stage_outputs,
)
from pairflow.stages.validate.contract import ContractError, run_contract

log = logging.getLogger("pairflow.stages.validate")


@dataclass(frozen=True)
class ContractOutputs:
    """The merged kept/rejected/report, and the contract's Data Docs: a one-file HTML page
    of the outcomes (``docs_html``) and GX's Data Docs site (``docs_site``, a directory)."""

    data: StageOutputs
    docs_html: Path
    docs_site: Path


def run_shard(cfg: PairflowConfig, inputs: ShardInputs, outputs: StageOutputs) -> StageReport:
    """Validate one shard of the ingested manifest: per-row checks, images decoded once."""
    # lazy: boto3, botocore (slow to import); only this path needs it
    from pairflow.stages.validate.rows import validate_frame

    watch = Stopwatch()
    shard = inputs.shard
    df = select_shard(read_manifest(inputs.manifest), shard, cfg.data.shards)
    log.info("validate shard %d/%d: %d rows", shard, cfg.data.shards, len(df))
    result = validate_frame(df, cfg.validate_, cfg.data.s3, progress=log_progress("validate"))
    report = write_stage_outputs("validate", len(df), result, outputs, watch, shard=shard)
    return finish_stage(report, outputs.report)


def run(cfg: PairflowConfig, inputs: GatherInputs, outputs: ContractOutputs) -> StageReport:
    """Merge the validated shards and check the dataset-level data contract (GX).

    Writes the merged validate report (the contract's outcomes in its metrics) and the Data
    Docs; a failed critical expectation fails the step.
    """

    merged = gather_shards("validate", inputs, outputs.data)
    docs_dir = outputs.docs_site
    result = run_contract(
        merged.frame, merged.rejected, cfg.validate_, docs_dir, raise_on_failure=False
    )
    log.info("%s (%d expectations; docs in %s)", result.message(), len(result.outcomes), docs_dir)
    outputs.docs_html.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.html, outputs.docs_html)
    metrics = merged.report.metrics_as(ValidateMetrics)
    metrics.contract = ContractSummary.model_validate(result.to_json_dict())
    report = merged.report.model_copy(update={"metrics": metrics.to_json()})
    finish_stage(report, outputs.data.report, cfg, inputs.mlflow_run_id)
    if not result.passed:
        raise ContractError(result.message(), result)
    return report
