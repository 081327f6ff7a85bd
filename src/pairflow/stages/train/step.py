"""Plain-Python body of the ``train`` pipeline step (wrapped by ``pairflow.components``).

Order: resolve and load the base model (a bad reference fails before any data is read), read
the curated manifest, launch the workers (torchrun locally, a TrainJob on a cluster), read
rank 0's result, write the report.

Train is a model stage: it outputs the model and a report, no manifest (evaluate takes its
held-out rows from the curated manifest itself). ``rows_in`` (= ``rows_out``, nothing is
rejected) counts the rows read; ``metrics`` splits them into ``rows_train`` + ``rows_val`` +
``rows_holdout`` (= rows_in).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairflow.config import PairflowConfig
from pairflow.data.schema import read_manifest
from pairflow.metrics import EpochFigures, TrainMetrics
from pairflow.models.open import open_model  # torch + transformers: only training needs it
from pairflow.models.pairs import TrainDataError
from pairflow.report import StageReport, Stopwatch
from pairflow.stage_io import finish_stage
from pairflow.stages.train.launch import WorkerArgs, run_torchrun

log = logging.getLogger("pairflow.stages.train")


@dataclass(frozen=True)
class TrainInputs:
    """The curated manifest; the pipeline's MLflow run (rank 0 logs to it) and KFP run id
    (names the TrainJob on a cluster). Standalone, both are empty."""

    manifest: str
    mlflow_run_id: str = ""
    kfp_run_id: str = ""


@dataclass(frozen=True)
class TrainOutputs:
    """The trained model directory and the stage report."""

    model: Path
    report: Path

    @classmethod
    def in_dir(cls, out_dir: str | Path) -> TrainOutputs:
        d = Path(out_dir)
        return cls(model=d / "model", report=d / "report.json")


def work_dir(model_dir: str | Path) -> Path:
    """Where the step keeps config, result and (by default) checkpoints: ``<model dir>.train``."""
    p = Path(model_dir)
    return p.with_name(p.name + ".train")


def resolve_base(cfg: PairflowConfig, tracking_uri: str | None) -> str:
    """The base reference as a local directory (loaded once to fail early), or ``""``."""

    ref = cfg.train.base_model or cfg.clip_filter.model
    if not ref:
        return ""
    loaded = open_model(ref, variant="torch", s3=cfg.data.s3, tracking_uri=tracking_uri)
    if cfg.train.launcher == "trainjob":
        return ref  # the job resolves it itself
    return str(loaded.path) if loaded.path is not None else ref


def run(
    cfg: PairflowConfig,
    inputs: TrainInputs,
    outputs: TrainOutputs,
    *,
    on_line: Callable[[str], None] | None = None,
) -> StageReport:
    """Train on the curated manifest; write the model and the report (logged to the
    pipeline's MLflow run when there is one). ``on_line`` gets the workers' output lines."""
    watch = Stopwatch()
    t = cfg.train
    manifest, model_dir, run_id = inputs.manifest, outputs.model, inputs.mlflow_run_id
    emit = on_line or (lambda line: log.info("%s", line))
    uri = cfg.mlflow.tracking_uri
    base = resolve_base(cfg, uri)
    df = read_manifest(manifest)
    if df.empty:
        raise TrainDataError(f"{manifest}: empty manifest, nothing to train on")
    work = work_dir(model_dir)
    work.mkdir(parents=True, exist_ok=True)
    if not base:
        # lazy: transformers and torch (slow to import); only a run with no base model needs them
        from pairflow.models.scratch import save_untrained_clip

        base = str(
            save_untrained_clip(work / "base", [str(c) for c in df["caption"]], cfg.run.seed)
        )
        emit(f"no base model configured: tiny CLIP built from config at {base}")
    config_file = work / "config.json"
    config_file.write_text(json.dumps(cfg.to_dict(), indent=2, sort_keys=True))
    ckpt = Path(t.checkpoint_dir) if t.checkpoint_dir else work / "checkpoints"
    result_file = work / "result.json"
    result_file.unlink(missing_ok=True)
    args = WorkerArgs(
        config=config_file,
        manifest=str(Path(manifest).resolve()),
        out=Path(model_dir).resolve(),
        base=base,
        checkpoint_dir=ckpt.resolve(),
        result=result_file.resolve(),
        tracking_uri=uri if run_id else "",
        run_id=run_id,
    )
    if t.launcher == "local":
        emit(f"torchrun: {t.world_size} processes on 127.0.0.1 ({t.model}, {t.epochs} epochs)")
        run_torchrun(t.world_size, args, emit)
    else:
        from pairflow.stages.train.cluster import run_on_cluster

        args = run_on_cluster(cfg, args, inputs.kfp_run_id, emit)
    result: dict[str, Any] = json.loads(Path(args.result).read_text())
    if Path(args.out) != Path(model_dir).resolve():
        shutil.copytree(args.out, model_dir, dirs_exist_ok=True)
    if not t.keep_checkpoints and args.checkpoint_dir is not None:
        shutil.rmtree(args.checkpoint_dir, ignore_errors=True)
    checkpoint = result.get("last_checkpoint") if t.keep_checkpoints else None
    metrics = TrainMetrics(
        model=t.model,
        fusion=t.fusion if t.model == "classifier" else None,
        launcher=t.launcher,
        base_model=base if t.base_model or cfg.clip_filter.model else "tiny-clip-from-config",
        rows_train=result["rows_train"],
        rows_val=result["rows_val"],
        rows_holdout=result["rows_holdout"],
        world_size=result["world_size"],
        samples_per_s=result["samples_per_s"],
        epochs=result["epochs_run"],
        steps=result["steps"],
        best_val_metric=result["best_metric"],
        best_epoch=result["best_epoch"],
        stopped_early=result["stopped_early"],
        bad_steps=result["bad_steps"],
        resumed_from_step=result["resumed_from_step"],
        checkpoint=checkpoint,
        val=EpochFigures.model_validate(result["final"]),
        step_seconds=result["timings"],
        train_seconds=round(result["seconds"], 2),
    )
    report = StageReport(
        stage="train",
        rows_in=len(df),
        rows_out=len(df),
        seconds=watch.seconds,
        metrics=metrics.to_json(),
    )
    return finish_stage(report, outputs.report, cfg, run_id)
