"""Step 1b: validate one shard per task, then merge the shards and check the data contract."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from pairflow.data.schema import read_manifest, write_manifest
from pairflow.report import StageOutputs, StageReport, Stopwatch
from pairflow.sharding import select_shard
from pairflow.stage_io import (
    finish_stage,
    load_step_config,
    log_progress,
    merge_shards,
    setup_logging,
    write_stage_outputs,
)

log = logging.getLogger("pairflow.stages.validate")


def validate_shard_step(
    config_path: str, manifest: str, shard: int, outputs: StageOutputs
) -> StageReport:
    """Validate one shard of the ingested manifest: per-row checks, images decoded once."""
    setup_logging()
    from pairflow.stages.validate.rows import validate_frame

    watch = Stopwatch()
    cfg = load_step_config(config_path)
    df = select_shard(read_manifest(manifest), shard, cfg.data.shards)
    log.info("validate shard %d/%d: %d rows", shard, cfg.data.shards, len(df))
    result = validate_frame(df, cfg.validate_, cfg.data.s3, progress=log_progress("validate"))
    report = write_stage_outputs("validate", len(df), result, outputs, watch, shard=shard)
    return finish_stage(report, outputs)


def contract_step(
    config_path: str,
    shard_manifests: list[str],
    shard_rejected: list[str],
    shard_reports: list[str],
    upstream_report: str,
    outputs: StageOutputs,
    docs_html: str,
    docs_site: str,
    kfp_run_id: str = "",
) -> StageReport:
    """Merge the validated shards and check the dataset-level data contract (GX).

    Writes the merged validate report (the contract's outcomes in its metrics), a one-file
    HTML page of the outcomes (``docs_html``) and GX's Data Docs site (``docs_site``, a
    directory); a failed critical expectation fails the step.
    """
    setup_logging()
    from pairflow.stages.validate.contract import ContractError, run_contract

    cfg = load_step_config(config_path)
    merged = merge_shards(
        "validate", shard_manifests, shard_reports, upstream_report, rejected=shard_rejected
    )
    write_manifest(merged.frame, outputs.kept)
    write_manifest(merged.rejected, outputs.rejected)
    docs_dir = Path(docs_site)
    result = run_contract(
        merged.frame, merged.rejected, cfg.validate_, docs_dir, raise_on_failure=False
    )
    log.info("%s (%d expectations; docs in %s)", result.message(), len(result.outcomes), docs_dir)
    Path(docs_html).parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.html, docs_html)
    report = merged.report.model_copy(
        update={"metrics": {**merged.report.metrics, "contract": result.to_json_dict()}}
    )
    finish_stage(report, outputs, cfg, kfp_run_id)
    if not result.passed:
        raise ContractError(result.message(), result)
    return report
