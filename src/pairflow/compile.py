"""Compile the retrain pipeline to KFP IR YAML with the config's image and platform config."""

from __future__ import annotations

from pathlib import Path

from pairflow.config import PairflowConfig


def compile_pipeline(cfg: PairflowConfig, output: str | Path) -> Path:
    """Write the IR for ``cfg`` to ``output``: every task runs in ``cfg.kubeflow.base_image``
    with the Kubernetes platform config (Secrets, ConfigMap) named by ``cfg.kubeflow``."""
    from kfp import compiler

    from pairflow.pipelines.retrain import build_pipeline

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg), str(out))
    return out
