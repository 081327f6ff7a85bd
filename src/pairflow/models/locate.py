"""Resolve a model reference to local files, before anything is loaded (the first half of
:func:`pairflow.models.open.open_model`).

References (:func:`locate_model`):

- a local directory;
- a Hugging Face id (``openai/clip-vit-base-patch32``): loaded from the local HF cache only
  when ``HF_HUB_OFFLINE`` is set (plain CLIPs only);
- an ``s3://bucket/prefix``: every object under the prefix is downloaded once into a cache
  keyed by the listing's content hash (keys, ETags, sizes): ``<cache>/s3/<hash>``;
- ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION``: an alias is resolved to its version
  once (so the version is exactly what was loaded) and the version's artifacts are downloaded
  once into ``<cache>/mlflow/<name>-<version>-<server hash>``; ``runs:/RUN/PATH`` is
  downloaded the same way, keyed by the URI.

``<cache>`` is ``$PAIRFLOW_CACHE/models`` (default ``~/.cache/pairflow/models``).

What a folder (local or downloaded) may hold, looked for in this order:

1. a compressed-model directory (``variants.json``, written by compress; see
   :mod:`pairflow.models.variants`), at the root or up to 3 folders below: variant ``auto``
   is the index's ``chosen`` one, any other name that variant;
2. a registered model version (what ``pairflow.registry`` logs): an ``MLmodel`` whose pyfunc
   config names the shipping ``variant`` and its ``kind``, with the ONNX variant folder in
   ``artifacts/variant`` (kind onnx) and the Hugging Face directory in ``artifacts/hf``;
3. one ONNX variant folder (``vision.onnx`` + ``text.onnx``, or a classifier's
   ``classifier.json``) at the root;
4. a Hugging Face CLIP directory (``save_pretrained`` layout, at the root or the shallowest
   one below), possibly a trained artifact (``pairflow_model.json``).

Variant ``torch`` always means the Hugging Face directory (4., also inside 1. and 2.).
Every failure is a one-line :class:`~pairflow.models.errors.ModelLoadError` naming the
reference. Torch-free: nothing here loads a model.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import yaml  # only registered models need it

from pairflow.config import S3Config
from pairflow.data import s3 as s3io
from pairflow.errors import InputDataError
from pairflow.models.errors import ModelLoadError, VariantError
from pairflow.models.formats import INDEX_FILE, SPEC_FILE, TEXT_FILE, VISION_FILE
from pairflow.models.variant_index import VariantIndex, VariantRecord

AUTO: Final = "auto"
TORCH: Final = "torch"
SEARCH_DEPTH = 3
MLFLOW_SCHEMES: tuple[str, ...] = ("models:/", "runs:/")
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")

Layout = Literal["hub", "hf", "variants", "registered", "onnx"]
Runtime = Literal["torch", "onnx"]


@dataclass(frozen=True)
class ModelLocation:
    """Where a reference resolved to, and which files of it load as the asked variant."""

    ref: str  # the reference as given (stripped)
    pinned: str  # aliases resolved (models:/NAME/VERSION); else ``ref``
    version: str  # the MLflow model version number; "" when not from the registry
    root: Path | None  # the local (or downloaded) folder of ``ref``; None for a hub id
    path: Path | str  # the folder that loads (a hub id for ``layout`` hub)
    layout: Layout  # where ``path`` was found (see the module docstring)
    runtime: Runtime
    variant: str  # the variant's name ("torch" for a plain Hugging Face directory)
    record: VariantRecord | None = None  # its ``variants.json`` row (layout variants)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def model_cache_dir() -> Path:
    """``$PAIRFLOW_CACHE/models``, else ``~/.cache/pairflow/models``."""
    root = os.environ.get("PAIRFLOW_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "pairflow"
    return base / "models"


def dir_digest(path: Path) -> str:
    """sha256 over relative names and contents of the files under ``path`` (dotfiles skipped).

    The same model directory has the same digest wherever it was loaded from.
    """
    h = hashlib.sha256()
    files = (p for p in path.rglob("*") if p.is_file())
    for f in sorted(p for p in files if not p.relative_to(path).as_posix().startswith(".")):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def find_hf_dir(root: Path, ref: str) -> Path:
    """The shallowest folder under ``root`` with ``config.json`` and safetensors weights."""

    def is_hf(d: Path) -> bool:
        return (d / "config.json").is_file() and any(d.glob("*.safetensors"))

    level = [root]
    for _ in range(SEARCH_DEPTH + 1):
        for d in level:
            if is_hf(d):
                return d
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir())
    if (root / "config.json").is_file():
        raise ModelLoadError(
            f"{ref}: model directory has config.json but no *.safetensors weights "
            "(pickle checkpoints are not loaded)"
        )
    raise ModelLoadError(
        f"{ref}: no Hugging Face model directory (config.json + *.safetensors) found"
    )


def _hf_dir(root: Path, ref: str) -> Path:
    """``root`` when it holds a ``config.json`` (the CLIP loader then says what is wrong with
    it), else the shallowest Hugging Face directory below."""
    if (root / "config.json").is_file():
        return root
    try:
        return find_hf_dir(root, ref)
    except ModelLoadError:
        raise ModelLoadError(
            f"{ref}: no config.json here or up to {SEARCH_DEPTH} folders below (not a "
            f"save_pretrained model directory, {INDEX_FILE} or registered model)"
        ) from None


def _s3_model_dir(ref: str, s3: S3Config | None, cache: Path) -> Path:
    """Download the objects under ``ref`` once; the cache folder is named by their hash."""
    try:
        bucket, prefix = s3io.parse_s3_uri(ref)
        keys = s3io.list_keys(ref, s3)
        if not keys:
            raise ModelLoadError(f"{ref}: no objects under this S3 prefix")
        base = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        listing = []
        for key in keys:
            etag, size = s3io.head_object(s3io.s3_uri(bucket, key), s3)
            listing.append((key[len(base) :], etag, size))
    except ModelLoadError:
        raise
    except InputDataError as exc:
        raise ModelLoadError(f"{ref}: cannot list model files ({exc})") from exc
    h = hashlib.sha256()
    for rel, etag, size in listing:
        h.update(f"{rel}\t{etag}\t{size}\n".encode())
    dest = cache / h.hexdigest()[:32]
    if (dest / ".complete").is_file():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
    try:
        for rel, _, _ in listing:
            try:
                s3io.download_file(s3io.s3_uri(bucket, base + rel), staging / rel, s3)
            except InputDataError as exc:
                raise ModelLoadError(f"{ref}: cannot download {rel} ({exc})") from exc
        (staging / ".complete").write_text(h.hexdigest() + "\n")
        _move_into_place(staging, dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _move_into_place(staging: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)  # an incomplete earlier download
    try:
        os.replace(staging, dest)
    except OSError:
        if not (dest / ".complete").is_file():  # a concurrent download won the race
            raise


def resolve_mlflow(uri: str, tracking_uri: str | None) -> tuple[str, str]:
    """``models:/NAME@ALIAS`` → (``models:/NAME/VERSION``, VERSION); versions pass through."""
    match = _MODEL_URI.match(uri)
    if match is None:
        raise ModelLoadError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    if match["version"]:
        return uri, match["version"]
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow import MlflowClient  # heavy; only registry references need it
    from mlflow.exceptions import MlflowException

    try:
        mv = MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(
            match["name"], match["alias"]
        )
    except MlflowException as exc:
        raise ModelLoadError(
            f"{uri}: cannot download from MLflow (alias not resolved: {first_line(exc)})"
        ) from exc
    return f"models:/{match['name']}/{mv.version}", str(mv.version)


def download_mlflow(uri: str, tracking_uri: str | None, cache: Path) -> Path:
    """A ``models:/NAME/VERSION`` (or ``runs:/``) URI's artifacts in ``cache`` (downloaded
    once). The folder's name includes the tracking server, so two servers' ``NAME/1`` never
    mix."""
    # lazy: mlflow (slow to import); only this path needs it
    import mlflow  # heavy; only registry references need it
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    server = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    key = hashlib.sha256(server.encode()).hexdigest()[:8]
    match = _MODEL_URI.match(uri)
    if match is not None and match["version"]:
        name = f"{match['name']}-{match['version']}-{key}"
    elif uri.startswith("runs:/"):
        name = "run-" + hashlib.sha256(f"{server}\0{uri}".encode()).hexdigest()[:24]
    else:
        raise ModelLoadError(f"{uri}: expected models:/NAME/VERSION or runs:/RUN/PATH")
    dest = cache / name
    if (dest / ".complete").is_file():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
    try:
        src = uri
        if match is not None:
            src = MlflowClient(tracking_uri=tracking_uri).get_model_version_download_uri(
                match["name"], match["version"]
            )
        mlflow.artifacts.download_artifacts(
            artifact_uri=src, dst_path=str(staging), tracking_uri=tracking_uri
        )
        (staging / ".complete").write_text(uri + "\n")
        _move_into_place(staging, dest)
    except (MlflowException, OSError) as exc:
        raise ModelLoadError(f"{uri}: cannot download from MLflow ({first_line(exc)})") from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def _shallowest(root: Path, filename: str) -> Path | None:
    """``root/filename`` or the shallowest one up to :data:`SEARCH_DEPTH` folders below."""
    for depth in range(SEARCH_DEPTH + 1):
        hits = sorted(root.glob("/".join(["*"] * depth + [filename])))
        if hits:
            return hits[0]
    return None


def _pyfunc_flavor(root: Path) -> tuple[Path, dict[str, Any]] | None:
    """(MLmodel path, its ``python_function`` flavor table) of the shallowest MLmodel under
    ``root``, or None when there is none."""

    mlmodel = _shallowest(root, "MLmodel")
    if mlmodel is None:
        return None
    try:
        meta = yaml.safe_load(mlmodel.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"{mlmodel}: unreadable MLmodel ({first_line(exc)})") from exc
    pyfunc = (meta.get("flavors") or {}).get("python_function") or {}
    return mlmodel, pyfunc if isinstance(pyfunc, dict) else {}


def find_variant_index(root: Path) -> Path | None:
    """The folder holding ``variants.json`` (compress's index), shallowest first."""
    hit = _shallowest(root, INDEX_FILE)
    return None if hit is None else hit.parent


def registered_variant(root: Path) -> tuple[str, str, Path, Path] | None:
    """(variant name, kind, variant folder, HF folder) of a registered pyfunc model, if
    ``root`` is one. Folders come from the MLmodel's artifact table: MLflow stores each
    artifact under its source's base name (``artifacts/int8_onnx``), not under its key."""
    found = _pyfunc_flavor(root)
    if found is None:
        return None
    mlmodel, pyfunc = found
    conf = pyfunc.get("config") or {}
    if not isinstance(conf, dict) or "variant" not in conf:
        return None
    table = pyfunc.get("artifacts") or {}

    def folder(key: str) -> Path:
        entry = table.get(key) if isinstance(table, dict) else None
        rel = entry.get("path") if isinstance(entry, dict) else None
        return mlmodel.parent / (str(rel) if rel else f"artifacts/{key}")

    kind = str(conf.get("kind", TORCH))
    return str(conf["variant"]), kind, folder("variant"), folder("hf")


def registered_labels(root: Path) -> list[str] | None:
    """The label set of a registered pyfunc model (its ``labels`` artifact), if it has one."""
    found = _pyfunc_flavor(root)
    if found is None:
        return None
    mlmodel, pyfunc = found
    table = pyfunc.get("artifacts") or {}
    entry = table.get("labels") if isinstance(table, dict) else None
    rel = entry.get("path") if isinstance(entry, dict) else None
    if not rel:
        return None
    path = mlmodel.parent / str(rel)
    try:
        labels = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{path}: unreadable label set ({first_line(exc)})") from exc
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ModelLoadError(f"{path}: expected a non-empty JSON list of label strings")
    return labels


def is_onnx_variant(folder: Path) -> bool:
    """Whether ``folder`` is one exported ONNX variant (towers, or a classifier spec)."""
    return (folder / SPEC_FILE).is_file() or (
        (folder / VISION_FILE).is_file() and (folder / TEXT_FILE).is_file()
    )


def _local_root(
    ref: str, s3: S3Config | None, cache: Path, tracking_uri: str | None
) -> tuple[Path | str, str, str]:
    """(root folder or hub id, pinned reference, MLflow version) of ``ref``."""
    if not ref:
        raise ModelLoadError(
            "empty model reference (give a directory, a Hugging Face id, an s3:// prefix or "
            "models:/NAME@ALIAS)"
        )
    if ref.startswith("models:/"):
        pinned, version = resolve_mlflow(ref, tracking_uri)
        return download_mlflow(pinned, tracking_uri, cache / "mlflow"), pinned, version
    if ref.startswith(MLFLOW_SCHEMES):
        return download_mlflow(ref, tracking_uri, cache / "mlflow"), ref, ""
    if s3io.is_s3_uri(ref):
        return _s3_model_dir(ref, s3, cache / "s3"), ref, ""
    if "://" in ref:
        raise ModelLoadError(
            f"{ref}: unsupported model reference scheme (use a directory, a Hugging Face id, "
            "s3:// or models:/)"
        )
    path = Path(ref).expanduser()
    if path.is_dir():
        return path, ref, ""
    if path.exists():
        raise ModelLoadError(f"{ref}: is a file, expected a model directory")
    if ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or "\\" in ref:
        raise ModelLoadError(f"{ref}: model directory not found")
    if not _HUB_ID.match(ref):
        raise ModelLoadError(
            f"{ref}: unknown model reference (not a directory, Hugging Face id, s3:// prefix "
            "or models:/ URI)"
        )
    return ref, ref, ""


def locate_model(
    uri: str | Path,
    *,
    variant: str = AUTO,
    s3: S3Config | None = None,
    tracking_uri: str | None = None,
    cache_dir: Path | None = None,
) -> ModelLocation:
    """Resolve ``uri`` (downloading S3 and MLflow models) and find the files of ``variant``
    (``auto``: the chosen or shipped one; ``torch``: the Hugging Face directory; or a
    compress variant's name). See the module docstring."""
    ref = str(uri).strip()
    root, pinned, version = _local_root(ref, s3, cache_dir or model_cache_dir(), tracking_uri)
    if not isinstance(root, Path):  # a Hugging Face hub id
        if variant not in (AUTO, TORCH):
            raise ModelLoadError(
                f"{ref}: a Hugging Face id has no variant {variant!r} (use auto or torch)"
            )
        return ModelLocation(ref, pinned, version, None, root, "hub", TORCH, TORCH)

    def at(path: Path, layout: Layout, runtime: Runtime, name: str) -> ModelLocation:
        return ModelLocation(ref, pinned, version, root, path, layout, runtime, name)

    if variant == TORCH:
        return at(_hf_dir(root, ref), "hf", TORCH, TORCH)
    index_dir = find_variant_index(root)
    if index_dir is not None:
        try:
            index = VariantIndex.read(index_dir)
            record = index.get(index.chosen if variant == AUTO else variant)
        except VariantError as exc:
            raise ModelLoadError(f"{ref}: {exc}") from exc
        return ModelLocation(
            ref,
            pinned,
            version,
            root,
            index_dir / record.name,
            "variants",
            record.kind,
            record.name,
            record,
        )
    registered = registered_variant(root)
    if registered is not None:
        name, kind, variant_dir, hf_dir = registered
        if variant not in (AUTO, name):
            raise ModelLoadError(
                f"{ref}: this model version ships variant {name!r} only, not {variant!r}"
            )
        if kind == "onnx":
            return at(variant_dir, "registered", "onnx", name)
        return at(_hf_dir(hf_dir, ref), "registered", TORCH, name)
    if is_onnx_variant(root):
        if variant not in (AUTO, root.name):
            raise ModelLoadError(
                f"{ref}: one ONNX variant folder ({root.name}): variant {variant!r} is not "
                "available (use auto)"
            )
        return at(root, "onnx", "onnx", root.name)
    hf = _hf_dir(root, ref)
    if variant != AUTO:
        raise ModelLoadError(
            f"{ref}: no {INDEX_FILE} here, only a Hugging Face model: variant {variant!r} "
            f"is not available (use auto or torch)"
        )
    return at(hf, "hf", TORCH, TORCH)
