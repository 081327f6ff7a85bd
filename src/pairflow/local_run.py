"""Run the ``retrain`` pipeline on this machine through ``kfp.local`` (SubprocessRunner)."""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from pairflow import tracking
from pairflow.config import PairflowConfig, param_values_from_config
from pairflow.errors import PairflowError
from pairflow.report import StageReport
from pairflow.summary import find_reports

log = logging.getLogger(__name__)


@dataclass
class LocalRunResult:
    """What a local pipeline run produced and where it lives."""

    succeeded: bool
    seconds: float
    run_dir: Path | None
    tracking_uri: str
    experiment: str
    reports: dict[str, StageReport] = field(default_factory=dict)
    error: str = ""


def prepare_local_config(cfg: PairflowConfig) -> PairflowConfig:
    """Pin the work dir, data source and MLflow URI to absolute values for subprocess steps."""
    out = cfg.model_copy(deep=True)
    workdir = Path(out.run.workdir).expanduser().resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    out.run.workdir = str(workdir)
    if out.data.source and "://" not in out.data.source:
        out.data.source = str(Path(out.data.source).expanduser().resolve())
    out.mlflow.tracking_uri = tracking.resolve_tracking_uri(out.mlflow.tracking_uri, workdir)
    out.kubeflow.io_retries = out.run.local_io_retries
    out.kubeflow.io_retry_backoff_s = 2
    return out


def run_pipeline_locally(cfg: PairflowConfig, *, enable_caching: bool = False) -> LocalRunResult:
    """Run the whole DAG in this Python; returns reports even when a step fails."""
    if not cfg.data.source:
        raise PairflowError("data.source: empty; pass --set data.source=PATH_OR_URI")
    cfg = prepare_local_config(cfg)
    from kfp import local

    from pairflow.pipelines.retrain import build_pipeline

    workdir = Path(cfg.run.workdir)
    root = workdir / "runs"
    root.mkdir(parents=True, exist_ok=True)
    # Creating the experiment here also runs MLflow's DB migrations once, before steps race.
    tracking.ensure_experiment(cfg.mlflow.tracking_uri, cfg.mlflow.experiment)
    local.init(
        runner=local.SubprocessRunner(use_venv=False),
        pipeline_root=str(root),
        workspace_root=str(workdir / "workspace"),
        raise_on_error=True,
        enable_caching=enable_caching,
    )
    before = {p.name for p in root.iterdir()}
    pipeline = build_pipeline(cfg)
    start = time.perf_counter()
    error = ""
    with warnings.catch_warnings():
        # Local steps run in this Python, not in the configured cluster image.
        warnings.filterwarnings("ignore", message=".*non-Python base image.*")
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        try:
            pipeline(**param_values_from_config(cfg))
            succeeded = True
        except RuntimeError as exc:
            succeeded, error = False, str(exc).splitlines()[0] if str(exc) else repr(exc)
    seconds = time.perf_counter() - start
    new = sorted(
        (p for p in root.iterdir() if p.name not in before and p.is_dir()),
        key=lambda p: p.stat().st_mtime,
    )
    run_dir = new[-1] if new else None
    reports = find_reports(run_dir) if run_dir else {}
    return LocalRunResult(
        succeeded, seconds, run_dir, cfg.mlflow.tracking_uri, cfg.mlflow.experiment, reports, error
    )
