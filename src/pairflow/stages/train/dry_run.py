"""``pairflow train --launcher trainjob --dry-run``: the TrainJob as YAML, nothing sent."""

from __future__ import annotations

from pathlib import Path

import yaml

from pairflow.config import PairflowConfig
from pairflow.errors import PairflowError
from pairflow.stages.train.cluster import plan_job
from pairflow.stages.train.launch import WorkerArgs


def trainjob_yaml(cfg: PairflowConfig, manifest: str, out: Path) -> str:
    """The TrainJob the step would create (like ``kubectl create --dry-run=client -o yaml``),
    preceded by a comment naming the job folder and what the step would stage there."""
    if cfg.train.launcher != "trainjob":
        raise PairflowError("--dry-run prints a TrainJob: use it with --launcher trainjob")
    base = cfg.train.base_model or cfg.clip_filter.model
    args = WorkerArgs(
        config=out / "config.json",
        manifest=manifest,
        out=out / "model",
        base=base,
        checkpoint_dir=None,
        result=out / "result.json",
    )
    plan = plan_job(cfg, args, "")
    files = ", ".join(["job.json", "config.json", plan.job["manifest"]])
    head = f"# job folder {plan.store.root}/ (staged: {files}; base {base or '(tiny CLIP)'})\n"
    return head + yaml.safe_dump(plan.body, sort_keys=False)
