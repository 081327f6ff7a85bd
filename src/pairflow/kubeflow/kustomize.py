"""A minimal kustomize renderer for the subset ``manifests/`` uses (no kustomize binary here).

Supported ``kustomization.yaml`` fields, applied in kustomize's order:

- ``resources``: YAML files (multi-document) and directories holding a kustomization;
- ``patches``: ``path`` or inline ``patch``, with an optional ``target`` (kind, name). A patch
  that is a mapping is a strategic merge patch: maps merge, ``null`` deletes a key, lists of
  named items (containers, env, volumes, ports with names …) merge by ``name``, other lists
  are replaced. Strategic merge patches on custom resources may not contain lists (kustomize
  has no schema for them); use a JSON6902 patch (a list of ``add``/``replace``/``remove`` ops,
  ``target`` required) for those;
- ``namespace``: set on every namespaced object (a Namespace object must already carry it);
- ``labels`` (``pairs``, ``includeSelectors``, ``includeTemplates``) and ``commonLabels``;
- ``replicas``: ``spec.replicas`` of Deployments/StatefulSets/ReplicaSets by name;
- ``images``: ``newName``/``newTag``/``digest`` for every ``containers``/``initContainers``
  image of any kind (custom resources included, as kustomize does).

Anything else is an error, so manifests cannot drift outside what this renders faithfully.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from pairflow.kubeflow.errors import KubeflowError

Obj = dict[str, Any]

SUPPORTED = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "labels",
    "commonLabels",
    "images",
    "replicas",
    "patches",
}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "ClusterTrainingRuntime",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
}
CORE_GROUPS = {"v1", "apps/v1", "batch/v1", "rbac.authorization.k8s.io/v1", "policy/v1"}
WORKLOADS = {"Deployment", "StatefulSet", "ReplicaSet", "DaemonSet", "Job"}


class KustomizeError(KubeflowError):
    """A kustomization outside the supported subset, or a patch that does not apply."""


def render(directory: Path) -> list[Obj]:
    """Render the kustomization in ``directory`` to a list of objects."""
    kfile = directory / "kustomization.yaml"
    try:
        kust = yaml.safe_load(kfile.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise KustomizeError(f"{kfile}: not a readable kustomization ({exc})") from exc
    unknown = set(kust) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{kfile}: unsupported fields {sorted(unknown)}")
    objs: list[Obj] = []
    for entry in kust.get("resources", []):
        objs.extend(_load_resource(directory / entry, kfile))
    for patch in kust.get("patches", []):
        _apply_patch(objs, patch, directory, kfile)
    if "namespace" in kust:
        _set_namespace(objs, str(kust["namespace"]), kfile)
    for group in kust.get("labels", []):
        _add_labels(objs, group["pairs"], group.get("includeSelectors", False),
                    group.get("includeTemplates", False))  # fmt: skip
    if "commonLabels" in kust:
        _add_labels(objs, kust["commonLabels"], True, True)
    for rep in kust.get("replicas", []):
        _set_replicas(objs, rep["name"], int(rep["count"]), kfile)
    for image in kust.get("images", []):
        _set_image(objs, image)
    _check_unique(objs, kfile)
    return objs


def _load_resource(path: Path, kfile: Path) -> list[Obj]:
    if path.is_dir():
        return render(path)
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as exc:
        raise KustomizeError(f"{kfile}: resource {path.name} unreadable ({exc})") from exc
    for doc in docs:
        if not isinstance(doc, dict) or "kind" not in doc or "metadata" not in doc:
            raise KustomizeError(f"{path}: every document needs kind and metadata")
    return docs


def _key(obj: Obj) -> tuple[str, str, str]:
    return obj["kind"], obj["metadata"].get("namespace", ""), obj["metadata"]["name"]


def _check_unique(objs: list[Obj], kfile: Path) -> None:
    seen: set[tuple[str, str, str]] = set()
    for obj in objs:
        if _key(obj) in seen:
            raise KustomizeError(f"{kfile}: duplicate object {_key(obj)}")
        seen.add(_key(obj))


# ---------------------------------------------------------------------------------------------
# patches


def _apply_patch(objs: list[Obj], spec: Obj, directory: Path, kfile: Path) -> None:
    if "path" in spec:
        text = (directory / spec["path"]).read_text()
    elif "patch" in spec:
        text = spec["patch"]
    else:
        raise KustomizeError(f"{kfile}: a patch needs 'path' or 'patch'")
    body = yaml.safe_load(text)
    target = spec.get("target")
    if isinstance(body, list):
        if not target:
            raise KustomizeError(f"{kfile}: a JSON6902 patch needs a target")
        matches = _select(objs, target)
        for obj in matches:
            for op in body:
                _json6902(obj, op, kfile)
    elif isinstance(body, dict):
        target = target or {"kind": body.get("kind"), "name": body["metadata"]["name"]}
        matches = _select(objs, target)
        for i, obj in enumerate(objs):
            if any(obj is m for m in matches):
                builtin = obj["apiVersion"] in CORE_GROUPS
                if not builtin and _has_list(body):
                    raise KustomizeError(
                        f"{kfile}: strategic merge patch on {obj['kind']} contains a list; "
                        "use a JSON6902 patch for custom resources"
                    )
                objs[i] = _merge(obj, body, builtin)
    else:
        raise KustomizeError(f"{kfile}: patch is neither a mapping nor a list of operations")
    if not matches:
        raise KustomizeError(f"{kfile}: patch target {target} matches no object")


def _select(objs: list[Obj], target: Obj) -> list[Obj]:
    return [
        o
        for o in objs
        if all(
            (k != "kind" or o["kind"] == v) and (k != "name" or o["metadata"]["name"] == v)
            for k, v in target.items()
        )
    ]


def _has_list(node: Any) -> bool:
    if isinstance(node, list):
        return True
    return isinstance(node, dict) and any(_has_list(v) for v in node.values())


def _merge(base: Any, patch: Any, named_lists: bool) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = _merge(out[key], value, named_lists)
            else:
                out[key] = copy.deepcopy(value)
        return out
    if (
        named_lists
        and isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in [*base, *patch])
    ):
        merged = [dict(i) for i in base]
        index = {i["name"]: n for n, i in enumerate(merged)}
        for item in patch:
            if item["name"] in index:
                n = index[item["name"]]
                merged[n] = _merge(merged[n], item, named_lists)
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _json6902(obj: Obj, op: Obj, kfile: Path) -> None:
    kind, path = op.get("op"), op.get("path", "")
    if kind not in ("add", "replace", "remove") or not path.startswith("/"):
        raise KustomizeError(f"{kfile}: unsupported JSON6902 op {op}")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
    node: Any = obj
    for part in parts[:-1]:
        try:
            node = node[int(part)] if isinstance(node, list) else node[part]
        except (KeyError, IndexError, ValueError) as exc:
            raise KustomizeError(f"{kfile}: JSON6902 path {path} not found") from exc
    last = parts[-1]
    if isinstance(node, list):
        if kind == "add" and last == "-":
            node.append(copy.deepcopy(op["value"]))
            return
        idx = int(last)
        if kind == "add":
            node.insert(idx, copy.deepcopy(op["value"]))
        elif kind == "replace":
            node[idx] = copy.deepcopy(op["value"])
        else:
            del node[idx]
        return
    if kind in ("replace", "remove") and last not in node:
        raise KustomizeError(f"{kfile}: JSON6902 {kind} of missing {path}")
    if kind == "remove":
        del node[last]
    else:
        node[last] = copy.deepcopy(op["value"])


# ---------------------------------------------------------------------------------------------
# transformers


def _set_namespace(objs: list[Obj], namespace: str, kfile: Path) -> None:
    for obj in objs:
        if obj["kind"] == "Namespace":
            if obj["metadata"]["name"] != namespace:
                raise KustomizeError(
                    f"{kfile}: renaming Namespace {obj['metadata']['name']} is not supported"
                )
        elif obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace


def _add_labels(objs: list[Obj], pairs: Obj, selectors: bool, templates: bool) -> None:
    for obj in objs:
        obj["metadata"].setdefault("labels", {}).update(pairs)
        spec = obj.get("spec")
        if not isinstance(spec, dict) or obj["kind"] not in (WORKLOADS | {"Service"}):
            continue
        if selectors:
            if obj["kind"] == "Service":
                spec.setdefault("selector", {}).update(pairs)
            else:
                spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)
        if (templates or selectors) and "template" in spec:
            spec["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _set_replicas(objs: list[Obj], name: str, count: int, kfile: Path) -> None:
    hits = [o for o in objs if o["kind"] in WORKLOADS and o["metadata"]["name"] == name]
    if not hits:
        raise KustomizeError(f"{kfile}: replicas: no workload named {name}")
    for obj in hits:
        obj["spec"]["replicas"] = count


def split_image(ref: str) -> tuple[str, str, str]:
    """``name[:tag][@digest]`` → (name, tag, digest); a registry port is not a tag."""
    name, _, digest = ref.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest


def _set_image(objs: list[Obj], image: Obj) -> None:
    def visit(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    for container in value:
                        _retag(container, image)
                visit(value)
        elif isinstance(node, list):
            for item in node:
                visit(item)

    visit(objs)


def _retag(container: Obj, image: Obj) -> None:
    ref = container.get("image")
    if not isinstance(ref, str):
        return
    name, tag, digest = split_image(ref)
    if name != image["name"]:
        return
    new = image.get("newName", name)
    if image.get("digest"):
        container["image"] = f"{new}@{image['digest']}"
    elif image.get("newTag"):
        container["image"] = f"{new}:{image['newTag']}"
    else:
        container["image"] = new + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
