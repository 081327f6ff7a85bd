"""Log the shipping variant as an MLflow 3 pyfunc model (models from code, no pickle)."""

from __future__ import annotations

import base64
import importlib.metadata
import io
import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pandas as pd
from mlflow.entities import LoggedModelOutput
from mlflow.models.signature import ModelSignature
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service.utils import _use_tracking_uri
from mlflow.types.schema import AnyType, Array, ColSpec, ParamSchema, ParamSpec, Schema
from PIL import Image, ImageDraw

from pairflow.registry.client import Registry
from pairflow.registry.names import LOGGED_MODEL_NAME
from pairflow.registry.variants import VariantSet
from pairflow.serve.pyfunc import (
    DEFAULT_MODE,
    HF_ARTIFACT,
    LABELS_ARTIFACT,
    VARIANT_ARTIFACT,
)

# MLflow copies this file into the model (found, not imported: importing it runs set_model)
_ENTRY = find_spec("pairflow.serve.pyfunc_entry")
assert _ENTRY is not None and _ENTRY.origin is not None, "pairflow.serve.pyfunc_entry is missing"
ENTRY_FILE = Path(_ENTRY.origin)
_REQUIREMENTS = ("pairflow", "mlflow", "torch", "transformers", "safetensors", "pillow", "pandas")


@contextmanager
def tracking_uri(uri: str) -> Iterator[None]:
    """Point MLflow's fluent API (and the registry, which follows it) at ``uri`` for the block.

    The previous state, including "never set", is restored afterwards.
    """

    before = registry_utils._registry_uri
    registry_utils._registry_uri = None
    try:
        with _use_tracking_uri(uri):
            yield
    finally:
        registry_utils._registry_uri = before


def example_input() -> Any:
    """A one-row input example: a 32 px PNG as a ``data:`` URI and a caption."""

    img = Image.new("RGB", (32, 32), "white")
    ImageDraw.Draw(img).ellipse((6, 6, 26, 26), fill="red")
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
    return pd.DataFrame({"image": [uri], "caption": ["a red circle"]})


def signature() -> Any:
    """Inputs, the ``mode`` param, and the outputs of every mode (each present in one mode:
    ``scores`` → score; ``labels`` → label, label_score + probabilities;
    ``embeddings`` → the two vectors)."""

    any_type = AnyType()  # type: ignore[no-untyped-call]
    inputs = Schema(
        [
            ColSpec(any_type, "image", required=False),
            ColSpec("string", "caption", required=False),
            ColSpec("string", "mode", required=False),
        ]
    )
    outputs = Schema(
        [
            ColSpec("double", "score", required=False),
            ColSpec("string", "label", required=False),
            ColSpec("double", "label_score", required=False),
            ColSpec(Array("double"), "probabilities", required=False),
            ColSpec(Array("double"), "image_embedding", required=False),
            ColSpec(Array("double"), "text_embedding", required=False),
        ]
    )
    return ModelSignature(
        inputs=inputs,
        outputs=outputs,
        params=ParamSchema([ParamSpec("mode", "string", DEFAULT_MODE)]),
    )


def requirements() -> list[str]:
    out = []
    for dist in _REQUIREMENTS:
        try:
            out.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            out.append(dist)
    return out


def log_pyfunc(
    reg: Registry,
    run_id: str,
    experiment_id: str,
    variants: VariantSet,
    labels: list[str],
    tags: dict[str, str],
) -> str:
    """Log the model on run ``run_id``; return its ``model_id``.

    A fresh LoggedModel is created on every attempt, so a retry after a failed upload never
    reuses half-written files.
    """

    with tempfile.TemporaryDirectory(prefix="pairflow-register-") as tmp:
        labels_file = Path(tmp) / "labels.json"
        labels_file.write_text(json.dumps(labels))
        artifacts = {HF_ARTIFACT: str(variants.hf_dir), LABELS_ARTIFACT: str(labels_file)}
        if variants.chosen.kind == "onnx":
            artifacts[VARIANT_ARTIFACT] = str(variants.chosen.path)
        config = {"variant": variants.chosen.name, "kind": variants.chosen.kind}

        def attempt() -> str:
            model = reg.client.create_logged_model(
                experiment_id, name=LOGGED_MODEL_NAME, source_run_id=run_id, tags=tags
            )
            with tracking_uri(reg.tracking_uri):
                mlflow.pyfunc.log_model(
                    name=LOGGED_MODEL_NAME,
                    python_model=str(ENTRY_FILE),
                    artifacts=artifacts,
                    model_config=config,
                    signature=signature(),
                    input_example=example_input(),
                    pip_requirements=requirements(),
                    model_id=model.model_id,
                )
            reg.client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
            return str(model.model_id)

        return reg.call(f"log model on run {run_id}", attempt)
