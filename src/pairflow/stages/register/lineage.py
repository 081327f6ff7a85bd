"""Lineage facts recorded with a version: data snapshot, code version, datasets, KFP run."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
from pathlib import Path

import pandas as pd

from pairflow.registry.client import Registry

SNAPSHOT_COLUMNS = ("id", "image", "caption", "label")
CODE_VERSION_ENV = "PAIRFLOW_GIT_SHA"


def manifest_digest(frame: pd.DataFrame) -> str:
    """sha256 of the manifest's content (id, image, caption, label; row order ignored)."""
    cols = [c for c in SNAPSHOT_COLUMNS if c in frame.columns]
    rows = frame[cols].astype("string").fillna("\0null").sort_values(cols[:1], kind="stable")
    h = hashlib.sha256(("\t".join(cols) + "\n").encode())
    for values in rows.itertuples(index=False, name=None):
        h.update(("\t".join(str(v) for v in values) + "\n").encode())
    return h.hexdigest()


def code_version() -> str:
    """``git:<sha>`` from ``$PAIRFLOW_GIT_SHA`` or the checkout, else ``pairflow==<version>``."""
    sha = os.environ.get(CODE_VERSION_ENV, "").strip()
    if not sha:
        try:
            out = subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            sha = out.stdout.strip() if out.returncode == 0 else ""
        except (OSError, subprocess.TimeoutExpired):
            sha = ""
    version = importlib.metadata.version("pairflow")
    return f"git:{sha} (pairflow=={version})" if sha else f"pairflow=={version}"


def kfp_run_url(base: str, kfp_run_id: str) -> str:
    """The KFP UI page of the run, or empty when no UI URL is configured."""
    if not base or not kfp_run_id:
        return ""
    return f"{base.rstrip('/')}/#/runs/details/{kfp_run_id}"


def log_datasets(
    reg: Registry, run_id: str, splits: dict[str, tuple[pd.DataFrame, str]], source: str
) -> dict[str, str]:
    """Log each split as a dataset input (context = its key); return name → digest."""
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow.data.pandas_dataset import from_pandas
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    inputs = []
    digests: dict[str, str] = {}
    for context, (frame, name) in splits.items():
        targets = "label" if "label" in frame.columns else None
        ds = from_pandas(frame, source=source, name=name, targets=targets)
        digests[name] = ds.digest
        inputs.append(
            DatasetInput(ds._to_mlflow_entity(), tags=[InputTag(MLFLOW_DATASET_CONTEXT, context)])
        )
    reg.call(f"log dataset inputs of run {run_id}", lambda: reg.client.log_inputs(run_id, inputs))
    return digests
