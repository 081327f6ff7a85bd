"""What gets uploaded: the compiled package, its parameters, digest and version name."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pairflow.kubeflow.errors import KubeflowError, PackageError

_SHA = re.compile(r"^[0-9a-f]{7,40}$")
# KFP IR parameter types → the Python type a runtime_config value must have.
_PARAM_TYPES: dict[str, type] = {
    "STRING": str,
    "NUMBER_INTEGER": int,
    "NUMBER_DOUBLE": float,
    "BOOLEAN": bool,
}


@dataclass(frozen=True)
class CompiledPackage:
    """A compiled KFP IR YAML: its path, pipeline name, parameter types and digest.

    The file holds the pipeline spec and, when compiled with kfp-kubernetes, a second document
    with the platform spec (``platforms.kubernetes``). ``server_spec`` is what a KFP server
    then returns as a version's ``pipeline_spec``: ``{"pipeline_spec": ..., "platform_spec":
    ...}`` (kubeflow/pipelines backend/src/apiserver/server/api_util.go,
    ``yamlStringToPipelineSpecStruct``), and the digest is taken over that.
    """

    path: Path
    spec: dict[str, Any]
    name: str
    param_types: dict[str, str]
    digest: str
    platform_spec: dict[str, Any] | None = None

    @property
    def server_spec(self) -> dict[str, Any]:
        if self.platform_spec is None:
            return self.spec
        return {"pipeline_spec": self.spec, "platform_spec": self.platform_spec}

    @classmethod
    def load(cls, path: Path) -> CompiledPackage:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except FileNotFoundError as exc:
            raise PackageError(f"{path}: compiled pipeline not found (run `make compile`)") from exc
        except (OSError, yaml.YAMLError) as exc:
            raise PackageError(f"{path}: not a readable pipeline YAML ({exc})") from exc
        specs = [d for d in docs if isinstance(d, dict) and "root" in d]
        platforms = [d for d in docs if isinstance(d, dict) and "platforms" in d]
        if len(specs) != 1 or len(platforms) > 1 or len(docs) != len(specs) + len(platforms):
            raise PackageError(
                f"{path}: expected one KFP IR document with a 'root' DAG (and at most one "
                "platform spec document)"
            )
        spec = specs[0]
        name = str(spec.get("pipelineInfo", {}).get("name", ""))
        if not name:
            raise PackageError(f"{path}: pipelineInfo.name is missing")
        params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        types = {k: str(v.get("parameterType", "STRING")) for k, v in params.items()}
        platform = platforms[0] if platforms else None
        held = spec if platform is None else {"pipeline_spec": spec, "platform_spec": platform}
        return cls(path, spec, name, types, spec_digest(held), platform)

    @classmethod
    def from_server_spec(cls, held: dict[str, Any], origin: str) -> CompiledPackage:
        """A version's spec as a KFP server returns it (``pipeline_spec`` of
        GetPipelineVersion: the IR, or ``{"pipeline_spec", "platform_spec"}``), named
        ``origin`` in errors; its digest equals that of the package it was uploaded from."""
        spec = held.get("pipeline_spec", held) if isinstance(held, dict) else None
        if not isinstance(spec, dict) or "root" not in spec:
            raise PackageError(f"{origin}: the server's pipeline spec has no 'root' DAG")
        platform = held.get("platform_spec") if "pipeline_spec" in held else None
        params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
        types = {k: str(v.get("parameterType", "STRING")) for k, v in params.items()}
        name = str(spec.get("pipelineInfo", {}).get("name", ""))
        return cls(Path(origin), spec, name, types, spec_digest(held), platform)

    def coerce(self, values: dict[str, Any]) -> dict[str, Any]:
        """``values`` restricted to this package's parameters, cast to their declared types."""
        out: dict[str, Any] = {}
        for key, value in values.items():
            kind = self.param_types.get(key)
            if kind is None:
                continue
            want = _PARAM_TYPES.get(kind)
            if want is float and isinstance(value, int | float) and not isinstance(value, bool):
                value = float(value)
            elif want is not None and not isinstance(value, want):
                raise PackageError(
                    f"{self.path}: parameter {key} is {kind}, got {value!r} "
                    f"({type(value).__name__})"
                )
            out[key] = value
        return out


def _normalise(obj: Any) -> Any:
    """Integral floats become ints: a KFP server stores specs as protobuf Structs (doubles)."""
    if isinstance(obj, dict):
        return {k: _normalise(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_normalise(v) for v in obj]
    if isinstance(obj, float) and obj.is_integer():
        return int(obj)
    return obj


def spec_digest(spec: dict[str, Any]) -> str:
    """sha256 of a pipeline spec's canonical JSON (stable across a server round trip)."""
    text = json.dumps(_normalise(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def git_sha(repo: Path | None = None) -> str:
    """The commit being released: ``$GITHUB_SHA`` in Actions, else ``git rev-parse HEAD``."""
    env = os.environ.get("GITHUB_SHA", "").strip().lower()
    if env:
        if not _SHA.match(env):
            raise KubeflowError(f"GITHUB_SHA={env!r}: not a git commit sha")
        return env
    try:
        proc = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise KubeflowError(
            "cannot name the pipeline version: not in a git checkout and GITHUB_SHA unset "
            "(pass --version NAME)"
        ) from exc
    return proc.stdout.strip()


def package_is_dirty(path: Path) -> bool:
    """True when ``path`` differs from HEAD (uncommitted or untracked)."""
    try:
        proc = subprocess.run(
            ["git", "status", "--porcelain", "--", path.name],
            cwd=path.parent,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.CalledProcessError):
        return False
    return bool(proc.stdout.strip())


def version_name(package: CompiledPackage, explicit: str | None = None) -> str:
    """Pipeline version name: ``explicit``, else the short git sha (``-dirty-<digest>`` if the
    package has uncommitted changes, so it never takes the name of the committed one)."""
    if explicit:
        return explicit
    name = git_sha(package.path.parent)[:12]
    if not os.environ.get("GITHUB_SHA") and package_is_dirty(package.path):
        name += f"-dirty-{package.digest[:8]}"
    return name
