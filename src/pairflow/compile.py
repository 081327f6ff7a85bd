"""Compile the pipelines to KFP IR YAML with the config's image and platform config.

``retrain`` goes where asked; ``monitor`` (:mod:`pairflow.pipelines.monitor`) is written next
to it as ``monitor.yaml`` (``pipelines/compiled/``), compiled from the same config, so the
two packages always carry the same image, Secrets and ConfigMap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pairflow.config import PairflowConfig

MONITOR_PACKAGE = "monitor.yaml"


def _write_ir(pipeline: Any, output: str | Path) -> Path:
    # lazy: kfp (slow to import); only compiling needs it
    from kfp import compiler

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(pipeline, str(out))
    return out


def compile_pipeline(cfg: PairflowConfig, output: str | Path) -> Path:
    """Write the IR for ``cfg`` to ``output``: every task runs in ``cfg.kubeflow.base_image``
    with the Kubernetes platform config (Secrets, ConfigMap) named by ``cfg.kubeflow``."""
    # lazy: the pipeline's components import kfp (slow); only compiling needs them
    from pairflow.pipelines.retrain import build_pipeline

    return _write_ir(build_pipeline(cfg), output)


def compile_monitor(cfg: PairflowConfig, output: str | Path) -> Path:
    """Write the ``monitor`` pipeline's IR for ``cfg`` to ``output`` (same platform config)."""
    # lazy: the pipeline's components import kfp (slow); only compiling needs them
    from pairflow.pipelines.monitor import build_pipeline

    return _write_ir(build_pipeline(cfg), output)


def monitor_package_path(retrain_output: str | Path) -> Path:
    """Where the monitor package goes when ``retrain`` is compiled to ``retrain_output``."""
    return Path(retrain_output).with_name(MONITOR_PACKAGE)


def compile_all(cfg: PairflowConfig, retrain_output: str | Path) -> list[Path]:
    """Both packages: ``retrain`` at ``retrain_output``, ``monitor`` beside it."""
    if Path(retrain_output).name == MONITOR_PACKAGE:
        raise ValueError(f"{retrain_output}: the retrain package cannot be named {MONITOR_PACKAGE}")
    retrain = compile_pipeline(cfg, retrain_output)
    return [retrain, compile_monitor(cfg, monitor_package_path(retrain))]
