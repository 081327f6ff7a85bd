"""Load a servable model by URI and variant behind one small interface.

URIs: a local directory, ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (an alias is
resolved to its version once, so the version label is exactly what was loaded; the version's
artifacts are downloaded once into the model cache).

What a directory (local or downloaded) may hold, looked for in this order:

1. a compressed-model directory (``variants.json``, written by ``pairflow compress``; see
   :mod:`pairflow.models.variants`), at the root or up to 3 folders below: variant
   ``auto`` loads the index's ``chosen`` one, any other name that variant, through
   :func:`pairflow.models.variants.load_variant`;
2. a registered model version (what ``pairflow.registry`` logs): an ``MLmodel`` whose pyfunc
   config names the shipping ``variant`` and its ``kind``, with the ONNX variant folder in
   ``artifacts/variant`` (kind onnx) and the Hugging Face directory in ``artifacts/hf``;
3. a Hugging Face CLIP directory (``save_pretrained`` layout): a train classifier artifact
   (``pairflow_model.json`` kind ``classifier``) loads with
   :func:`pairflow.models.trained.load_trained` and classifies with its fusion head and
   labels; any other with :func:`pairflow.models.clip.load_clip` (zero-shot labels).

Variant ``torch`` always means the Hugging Face directory (3.). Every model returns
L2-normalised float32 embeddings.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pairflow.data.pixels import sized_pixels as sized_pixels  # re-exported
from pairflow.models.clip import ModelLoadError, dir_digest, find_hf_dir, model_cache_dir
from pairflow.models.formats import INDEX_FILE, META_FILE
from pairflow.parallel import available_cpus

if TYPE_CHECKING:
    from PIL import Image

    from pairflow.models.clip import LoadedClip
    from pairflow.models.trained import TrainedModel
    from pairflow.models.variants import LoadedVariant

log = logging.getLogger("pairflow.models.open")

AUTO, TORCH = "auto", "torch"
SEARCH_DEPTH = 3
_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


class ServableModel(Protocol):
    """What the predictor needs from a model, whatever its runtime."""

    variant: str
    labels: list[str] | None  # classes of the classifier; None = zero-shot classification

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray: ...

    def embed_texts(self, captions: Sequence[str]) -> np.ndarray: ...

    def classify(self, images: Sequence[Image.Image], captions: Sequence[str]) -> np.ndarray:
        """Class logits [N, len(labels)] of image-caption pairs (classifiers only)."""
        ...


def _normalise(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    out: np.ndarray = x / np.maximum(norm, 1e-12)
    return out


def _no_head(variant: str) -> NotImplementedError:
    return NotImplementedError(f"{variant}: no classifier head (zero-shot labels are used)")


@dataclass
class TorchClip:
    """A Hugging Face CLIP on torch (CPU or CUDA), from :func:`load_clip`."""

    clip: LoadedClip
    variant: str = TORCH
    labels: list[str] | None = None

    def _pixels(self, images: Sequence[Image.Image]) -> Any:
        import torch

        fast = sized_pixels(self.clip.processor.image_processor, images)
        if fast is None:
            out = self.clip.processor.image_processor(images=list(images), return_tensors="np")
            fast = np.asarray(out["pixel_values"], np.float32)
        return torch.from_numpy(fast).to(self.clip.device)

    def _tokens(self, captions: Sequence[str]) -> tuple[Any, Any]:
        import torch

        enc = self.clip.processor.tokenizer(
            list(captions),
            padding=True,
            truncation=True,
            max_length=self.clip.max_text_length,
            return_tensors="np",
        )
        dev = self.clip.device
        ids = torch.from_numpy(np.asarray(enc["input_ids"], np.int64)).to(dev)
        return ids, torch.from_numpy(np.asarray(enc["attention_mask"], np.int64)).to(dev)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        from pairflow.models.clip import features

        with torch.inference_mode():
            emb = features(self.clip.model.get_image_features(pixel_values=self._pixels(images)))
        return _normalise(emb.float().cpu().numpy())

    def embed_texts(self, captions: Sequence[str]) -> np.ndarray:
        import torch

        from pairflow.models.clip import features

        ids, mask = self._tokens(captions)
        with torch.inference_mode():
            emb = features(self.clip.model.get_text_features(input_ids=ids, attention_mask=mask))
        return _normalise(emb.float().cpu().numpy())

    def classify(self, images: Sequence[Image.Image], captions: Sequence[str]) -> np.ndarray:
        raise _no_head(self.variant)


@dataclass
class TrainedClassifier(TorchClip):
    """A train classifier artifact: CLIP towers plus its fusion head over ``labels``."""

    trained: TrainedModel | None = None

    def classify(self, images: Sequence[Image.Image], captions: Sequence[str]) -> np.ndarray:
        import torch

        assert self.trained is not None
        ids, mask = self._tokens(captions)
        with torch.inference_mode():
            logits = self.trained.classify(self._pixels(images), ids, mask)
        return np.asarray(logits.float().cpu().numpy(), dtype=np.float32)


@dataclass
class VariantModel:
    """One compress variant (torch or ONNX Runtime) from :mod:`pairflow.models.variants`."""

    loaded: LoadedVariant
    variant: str
    labels: list[str] | None = None

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        pixels = self.loaded.preprocess_images(list(images))
        return _normalise(self.loaded.embed_images(pixels))

    def embed_texts(self, captions: Sequence[str]) -> np.ndarray:
        ids, mask = self.loaded.tokenize(list(captions))
        return _normalise(self.loaded.embed_texts(ids, mask))

    def classify(self, images: Sequence[Image.Image], captions: Sequence[str]) -> np.ndarray:
        raise _no_head(self.variant)


@dataclass(frozen=True)
class Loaded:
    """A servable model plus what identifies it in metrics and logs."""

    model: ServableModel
    version: str  # the label on every metric: MLflow version number, or local-<digest12>
    ref: str  # the reference actually loaded (aliases resolved)
    path: Path  # the folder the model was loaded from
    # zero-shot classes shipped with a registered pyfunc (its labels.json): the registry's
    # pyfunc classifies over them, so the server does too; None = serve.labels
    zero_shot_labels: list[str] | None = None


def resolve_mlflow(uri: str, tracking_uri: str | None) -> tuple[str, str]:
    """``models:/NAME@ALIAS`` → (``models:/NAME/VERSION``, VERSION); versions pass through."""
    match = _MODEL_URI.match(uri)
    if match is None:
        raise ModelLoadError(f"{uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    if match["version"]:
        return uri, match["version"]
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        mv = MlflowClient(tracking_uri=tracking_uri).get_model_version_by_alias(
            match["name"], match["alias"]
        )
    except MlflowException as exc:
        raise ModelLoadError(f"{uri}: cannot resolve alias ({exc.message})") from exc
    return f"models:/{match['name']}/{mv.version}", str(mv.version)


def download_version(uri: str, tracking_uri: str | None) -> Path:
    """An MLflow model version's artifacts in a local cache folder (downloaded once).

    The cache key includes the tracking server, so two servers' ``NAME/1`` never mix.
    """
    import hashlib

    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    match = _MODEL_URI.match(uri)
    if match is None or not match["version"]:
        raise ModelLoadError(f"{uri}: expected models:/NAME/VERSION")
    server = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI", "")
    key = hashlib.sha256(server.encode()).hexdigest()[:8]
    dest = model_cache_dir() / "serve" / f"{match['name']}-{match['version']}-{key}"
    if (dest / ".complete").is_file():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    try:
        src = MlflowClient(tracking_uri=tracking_uri).get_model_version_download_uri(
            match["name"], match["version"]
        )
        mlflow.artifacts.download_artifacts(
            artifact_uri=src, dst_path=str(dest), tracking_uri=tracking_uri
        )
    except (MlflowException, OSError) as exc:
        raise ModelLoadError(f"{uri}: cannot download from MLflow ({exc})") from exc
    (dest / ".complete").write_text(uri + "\n")
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
    import yaml  # only registered models need it

    mlmodel = _shallowest(root, "MLmodel")
    if mlmodel is None:
        return None
    try:
        meta = yaml.safe_load(mlmodel.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelLoadError(f"{mlmodel}: unreadable MLmodel ({exc})") from exc
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


def _variant_model(loaded: LoadedVariant) -> VariantModel:
    return VariantModel(loaded, f"{loaded.name} ({loaded.kind})")


def load_hf(directory: Path, ref: str, name: str = TORCH) -> TorchClip:
    """A Hugging Face directory: a train classifier artifact, else a plain CLIP."""
    import json

    meta_path = directory / META_FILE
    kind = ""
    if meta_path.is_file():
        try:
            kind = str(json.loads(meta_path.read_text()).get("kind", ""))
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"{meta_path}: unreadable ({exc})") from exc
    if kind == "classifier":
        from pairflow.models.trained import load_trained

        trained = load_trained(directory, device="cpu")
        return TrainedClassifier(
            trained.clip, f"{name} (classifier)", list(trained.labels or []), trained
        )
    from pairflow.models.clip import load_clip

    return TorchClip(load_clip(str(directory), device="cpu"), name)


def open_model_dir(root: Path, variant: str, threads: int, ref: str) -> tuple[ServableModel, Path]:
    """The model in ``root`` (see the module docstring) and the folder it came from."""
    from pairflow.models.errors import VariantError

    if variant == TORCH:
        hf = find_hf_dir(root, ref)
        return load_hf(hf, ref), hf
    index = find_variant_index(root)
    if index is not None:
        from pairflow.models.variants import load_variant

        try:
            loaded = load_variant(index, None if variant == AUTO else variant, threads)
        except VariantError as exc:
            raise ModelLoadError(f"{ref}: {exc}") from exc
        return _variant_model(loaded), loaded.path
    registered = registered_variant(root)
    if registered is not None:
        name, kind, variant_dir, hf_dir = registered
        if variant not in (AUTO, name):
            raise ModelLoadError(
                f"{ref}: this model version ships variant {name!r} only, not {variant!r}"
            )
        if kind == "onnx":
            from pairflow.models.variants import open_variant

            try:
                model = _variant_model(open_variant(variant_dir, "onnx", threads, name))
            except VariantError as exc:
                raise ModelLoadError(f"{ref}: {exc}") from exc
            return model, variant_dir
        hf = find_hf_dir(hf_dir, ref)
        return load_hf(hf, ref, name), hf
    hf = find_hf_dir(root, ref)
    if variant not in (AUTO, TORCH):
        raise ModelLoadError(
            f"{ref}: no {INDEX_FILE} here, only a Hugging Face model: variant {variant!r} "
            f"is not available (use auto or torch)"
        )
    return load_hf(hf, ref), hf


def load_servable(
    uri: str,
    variant: str = AUTO,
    *,
    threads: int = 0,
    tracking_uri: str | None = None,
    version_label: str | None = None,
) -> Loaded:
    """Load ``uri`` as ``variant``; the version label defaults to the MLflow version number
    (aliases resolved) or ``local-<first 12 hex of the loaded folder's digest>``."""
    threads = threads or available_cpus()
    ref = uri.strip()
    if ref.startswith("models:/"):
        ref, version = resolve_mlflow(ref, tracking_uri)
        root = download_version(ref, tracking_uri)
    else:
        root = Path(ref).expanduser()
        if not root.is_dir():
            raise ModelLoadError(f"{uri}: model directory not found")
        version = ""
    model, path = open_model_dir(root, variant, threads, ref)
    label = version_label or version or f"local-{dir_digest(path)[:12]}"
    log.info("loaded %s: variant %s from %s", ref, model.variant, path)
    return Loaded(model, label, ref, path, registered_labels(root))


def registered_labels(root: Path) -> list[str] | None:
    """The label set of a registered pyfunc model (its ``labels`` artifact), if it has one."""
    import json

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
        raise ModelLoadError(f"{path}: unreadable label set ({exc})") from exc
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise ModelLoadError(f"{path}: expected a non-empty JSON list of label strings")
    return labels
