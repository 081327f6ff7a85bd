"""Compile the pipelines to KFP IR YAML with the config's image and platform config.

``retrain`` goes where asked; ``monitor`` (:mod:`pairflow.pipelines.monitor`) is written next
to it as ``monitor.yaml`` (``pipelines/compiled/``), compiled from the same config, so the
two packages always carry the same image, Secrets and ConfigMap.
"""

from __future__ import annotations

from pathlib import Path

from pairflow.config import PairflowConfig

MONITOR_PACKAGE = "monitor.yaml"


def compile_pipeline(cfg: PairflowConfig, output: str | Path) -> Path:
    """Write the IR for ``cfg`` to ``output``: every task runs in ``cfg.kubeflow.base_image``
    with the Kubernetes platform config (Secrets, ConfigMap) named by ``cfg.kubeflow``."""
    # lazy: kfp and the pipeline's components (slow to import); only compiling needs them
    from kfp import compiler

    from pairflow.pipelines.retrain import build_pipeline

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg), str(out))
    return out


def compile_monitor(cfg: PairflowConfig, output: str | Path) -> Path:
    """Write the ``monitor`` pipeline's IR for ``cfg`` to ``output`` (same platform config)."""
    # lazy: kfp and the pipeline's components (slow to import); only compiling needs them
    from kfp import compiler

    from pairflow.pipelines.monitor import build_pipeline

    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build_pipeline(cfg), str(out))
    return out


def monitor_package_path(retrain_output: str | Path) -> Path:
    """Where the monitor package goes when ``retrain`` is compiled to ``retrain_output``."""
    return Path(retrain_output).with_name(MONITOR_PACKAGE)


def compile_all(cfg: PairflowConfig, retrain_output: str | Path) -> list[Path]:
    """Both packages: ``retrain`` at ``retrain_output``, ``monitor`` beside it."""
    retrain = compile_pipeline(cfg, retrain_output)
    if retrain.name == MONITOR_PACKAGE:
        raise ValueError(f"{retrain}: the retrain package cannot be named {MONITOR_PACKAGE}")
    return [retrain, compile_monitor(cfg, monitor_package_path(retrain))]
