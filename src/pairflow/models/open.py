"""Open any model reference as one typed object: :func:`open_model` -> :class:`OpenedModel`.

References: a local directory, a Hugging Face id, an ``s3://`` prefix, ``models:/NAME@ALIAS``
or ``models:/NAME/VERSION`` (an alias is resolved to its version once, so the version label is
exactly what was loaded). What a folder may hold — a compressed-model directory
(``variants.json``: the chosen or a named variant, torch or ONNX), a registered model version
(its shipping variant), one ONNX variant folder, a Hugging Face CLIP directory or a trained
artifact (``pairflow_model.json``: CLIP or fusion classifier) — is found by
:func:`pairflow.models.locate.locate_model`; this module loads what it found with the format
readers (:mod:`~pairflow.models.clip`, :mod:`~pairflow.models.trained`,
:mod:`~pairflow.models.variants`), which code outside :mod:`pairflow.models` does not call.

Variant ``torch`` always means the Hugging Face directory. Every model returns L2-normalised
float32 embeddings; classifiers also classify over their own labels. A bad reference is a
one-line :class:`~pairflow.models.errors.ModelLoadError` naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from pairflow.config import S3Config
from pairflow.data.pixels import sized_pixels as sized_pixels  # re-exported
from pairflow.models.clip import LoadedClip, features, read_clip
from pairflow.models.errors import ModelLoadError, VariantError
from pairflow.models.formats import META_FILE
from pairflow.models.locate import AUTO as AUTO  # re-exported
from pairflow.models.locate import TORCH as TORCH  # re-exported
from pairflow.models.locate import ModelLocation as ModelLocation  # re-exported
from pairflow.models.locate import dir_digest, registered_labels
from pairflow.models.locate import locate_model as locate_model  # re-exported
from pairflow.models.trained import TrainedModel, with_head
from pairflow.models.variants import LoadedVariant, open_variant
from pairflow.parallel import available_cpus

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger("pairflow.models.open")


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
    """A Hugging Face CLIP on torch (CPU or CUDA)."""

    clip: LoadedClip
    variant: str = TORCH
    labels: list[str] | None = None

    def _pixels(self, images: Sequence[Image.Image]) -> torch.Tensor:
        fast = sized_pixels(self.clip.processor.image_processor, images)
        if fast is None:
            out = self.clip.processor.image_processor(images=list(images), return_tensors="np")
            fast = np.asarray(out["pixel_values"], np.float32)
        return torch.from_numpy(fast).to(self.clip.device)

    def _tokens(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
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
        with torch.inference_mode():
            emb = features(self.clip.model.get_image_features(pixel_values=self._pixels(images)))
        return _normalise(emb.float().cpu().numpy())

    def embed_texts(self, captions: Sequence[str]) -> np.ndarray:
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
        assert self.trained is not None
        ids, mask = self._tokens(captions)
        with torch.inference_mode():
            logits = self.trained.classify(self._pixels(images), ids, mask)
        return np.asarray(logits.float().cpu().numpy(), dtype=np.float32)


@dataclass
class VariantModel:
    """One compress variant (torch or ONNX Runtime); a classifier variant classifies with its
    own head over its labels."""

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
        if self.labels is None:
            raise _no_head(self.variant)
        pixels = self.loaded.preprocess_images(list(images))
        ids, mask = self.loaded.tokenize(list(captions))
        return np.asarray(self.loaded.classify(pixels, ids, mask), dtype=np.float32)


@dataclass(frozen=True)
class OpenedModel:
    """A model opened by :func:`open_model`: the same interface whatever its format, what
    identifies it, and the lower-level objects that some callers need (``clip``: the torch
    CLIP to fine-tune, export or score with; ``trained``: a trained artifact's metadata and
    fusion head; ``loaded_variant``: a compress variant's runner)."""

    model: ServableModel  # the runtime: embed_images / embed_texts / classify
    location: ModelLocation
    version: str  # the label on every metric: MLflow version number, or local-<digest12>
    digest: str  # sha256 of the loaded folder (of the hub id and commit for a hub model)
    torch_clip: LoadedClip | None = None
    trained: TrainedModel | None = None
    loaded_variant: LoadedVariant | None = None
    # zero-shot classes shipped with a registered pyfunc (its labels.json): the registry's
    # pyfunc classifies over them, so the server does too; None = the caller's labels
    zero_shot_labels: list[str] | None = None

    @property
    def ref(self) -> str:
        """The reference actually loaded (aliases resolved to ``models:/NAME/VERSION``)."""
        return self.location.pinned

    @property
    def path(self) -> Path | None:
        """The folder the model was loaded from; None for a Hugging Face hub id."""
        where = self.location.path
        return where if isinstance(where, Path) else None

    @property
    def variant(self) -> str:
        """The variant as shown in logs and metrics, e.g. ``int8_onnx (onnx)``."""
        return self.model.variant

    @property
    def runtime(self) -> str:
        return self.location.runtime

    @property
    def labels(self) -> list[str] | None:
        """A classifier's classes (columns of :meth:`classify`); None for a CLIP."""
        return self.model.labels

    @property
    def kind(self) -> str:
        """``classifier`` (it has its own head and labels) or ``clip``."""
        return "clip" if self.labels is None else "classifier"

    @property
    def clip(self) -> LoadedClip:
        """The torch CLIP towers (model, processor, device); :class:`ModelLoadError` for an
        ONNX variant (open it with ``variant="torch"`` for its Hugging Face directory)."""
        if self.torch_clip is None:
            raise ModelLoadError(
                f"{self.location.ref}: variant {self.variant} is not a torch CLIP (open it with "
                "variant='torch' for its Hugging Face directory)"
            )
        return self.torch_clip

    @property
    def processor(self) -> Any:
        """The ``CLIPProcessor`` (image processor + tokenizer) the model was saved with."""
        if self.torch_clip is not None:
            return self.torch_clip.processor
        assert self.loaded_variant is not None
        return self.loaded_variant.processor

    @property
    def max_text_length(self) -> int:
        """Tokens the text tower takes (captions are truncated to this)."""
        if self.torch_clip is not None:
            return self.torch_clip.max_text_length
        return int(self.processor.tokenizer.model_max_length)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        return self.model.embed_images(images)

    def embed_texts(self, captions: Sequence[str]) -> np.ndarray:
        return self.model.embed_texts(captions)

    def classify(self, images: Sequence[Image.Image], captions: Sequence[str]) -> np.ndarray:
        """Class logits [N, len(labels)]; NotImplementedError for a CLIP (no head)."""
        return self.model.classify(images, captions)


def open_model(
    uri: str | Path | ModelLocation,
    *,
    variant: str = AUTO,
    s3: S3Config | None = None,
    device: str | None = "cpu",
    threads: int | None = None,
    tracking_uri: str | None = None,
    cache_dir: Path | None = None,
    version_label: str | None = None,
) -> OpenedModel:
    """Open ``uri`` (or an already located model) as ``variant``.

    ``variant``: ``auto`` (the chosen or shipped variant, else the Hugging Face model),
    ``torch`` (the Hugging Face directory) or a compress variant's name. ``device``: where
    torch models go (None: CUDA when available); compress variants load on the CPU.
    ``threads``: ONNX Runtime intra-op threads (default: the available CPUs). The version
    label defaults to the MLflow version number or ``local-<first 12 hex of the digest>``.
    """
    loc = (
        uri
        if isinstance(uri, ModelLocation)
        else locate_model(
            uri, variant=variant, s3=s3, tracking_uri=tracking_uri, cache_dir=cache_dir
        )
    )
    if loc.layout in ("variants", "onnx") or loc.runtime == "onnx":
        opened = _open_variant(loc, threads or available_cpus())
    else:
        opened = _open_torch(loc, device)
    label = version_label or loc.version or f"local-{opened.digest[:12]}"
    zero_shot = registered_labels(loc.root) if loc.root is not None else None
    opened = OpenedModel(
        opened.model,
        loc,
        label,
        opened.digest,
        opened.torch_clip,
        opened.trained,
        opened.loaded_variant,
        zero_shot,
    )
    log.info("opened %s: variant %s from %s", loc.pinned, opened.variant, loc.path)
    return opened


def _open_variant(loc: ModelLocation, threads: int) -> OpenedModel:
    assert isinstance(loc.path, Path)
    try:
        loaded = open_variant(loc.path, loc.runtime, threads, loc.variant)
    except VariantError as exc:
        raise ModelLoadError(f"{loc.ref}: {exc}") from exc
    loaded.record = loc.record
    model = VariantModel(loaded, f"{loaded.name} ({loaded.kind})", loaded.labels)
    digest = loaded.clip.digest if loaded.clip is not None else dir_digest(loc.path)
    return OpenedModel(model, loc, "", digest, loaded.clip, loaded.trained, loaded, None)


def _open_torch(loc: ModelLocation, device: str | None) -> OpenedModel:
    clip = read_clip(loc.path, loc.ref, device=device)
    name = loc.variant
    if clip.path is None or not (clip.path / META_FILE).is_file():
        return OpenedModel(TorchClip(clip, name), loc, "", clip.digest, clip)
    trained = with_head(clip, loc.ref)
    model: TorchClip = TorchClip(clip, name)
    if trained.kind == "classifier":
        labels = list(trained.labels or [])
        model = TrainedClassifier(clip, f"{name} (classifier)", labels, trained)
    return OpenedModel(model, loc, "", clip.digest, clip, trained)
