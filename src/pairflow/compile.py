"""Compile the retrain pipeline to KFP IR YAML with the config's base image."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

from pairflow.config import PairflowConfig


def compile_pipeline(cfg: PairflowConfig, output: str | Path) -> Path:
    """Write the IR for ``cfg`` to ``output``; components use ``cfg.kubeflow.base_image``."""
    from kfp import compiler

    from pairflow.components.base import BASE_IMAGE_ENV

    previous = os.environ.get(BASE_IMAGE_ENV)
    os.environ[BASE_IMAGE_ENV] = cfg.kubeflow.base_image
    try:
        # Components read the base image when decorated: re-import them under this config.
        for name in sorted(m for m in sys.modules if m.startswith("pairflow.components.")):
            if name != "pairflow.components.base":
                importlib.reload(sys.modules[name])
        retrain = importlib.reload(importlib.import_module("pairflow.pipelines.retrain"))
        out = Path(output)
        out.parent.mkdir(parents=True, exist_ok=True)
        compiler.Compiler().compile(retrain.build_pipeline(cfg), str(out))
    finally:
        if previous is None:
            os.environ.pop(BASE_IMAGE_ENV, None)
        else:
            os.environ[BASE_IMAGE_ENV] = previous
    return out
