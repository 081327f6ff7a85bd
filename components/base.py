"""The shared component decorator: base image from config, no runtime pip installs."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from kfp import dsl

from pairflow.config import PairflowConfig

BASE_IMAGE_ENV = "PAIRFLOW_BASE_IMAGE"


def base_image() -> str:
    """``$PAIRFLOW_BASE_IMAGE`` or the default config's ``kubeflow.base_image``."""
    return os.environ.get(BASE_IMAGE_ENV) or PairflowConfig().kubeflow.base_image


def component(func: Callable[..., Any]) -> Any:
    """``dsl.component`` in the runtime image, which already has pairflow and kfp installed."""
    return dsl.component(func, base_image=base_image(), install_kfp_package=False)
