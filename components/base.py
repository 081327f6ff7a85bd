"""The shared component decorator: the runtime image, no runtime pip installs.

Components are decorated once with the default runtime image (``images/runtime``, which
already holds pairflow and kfp). The pipeline sets each task's image from
``kubeflow.base_image`` (``PipelineTask.set_container_image``), so another image needs a
recompile, never a re-import.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kfp import dsl

from pairflow.kubeflow.settings import RUNTIME_IMAGE_REPO, RUNTIME_IMAGE_TAG

DEFAULT_IMAGE = f"{RUNTIME_IMAGE_REPO}:{RUNTIME_IMAGE_TAG}"


def component(func: Callable[..., Any]) -> Any:
    """``dsl.component`` in the runtime image, which already has pairflow and kfp installed."""
    return dsl.component(func, base_image=DEFAULT_IMAGE, install_kfp_package=False)
