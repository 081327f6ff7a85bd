"""Load any compressed variant and run it the same way, torch or ONNX Runtime.

Directory layout written by the compress step (the ``compressed`` model artifact)::

    <dir>/variants.json          the index (below)
    <dir>/variants.md            the variant table (Markdown)
    <dir>/<variant name>/        one folder per variant, self-contained:
        kind "torch": a Hugging Face ``save_pretrained`` CLIP directory
                      (config.json, model.safetensors, processor/tokenizer files)
        kind "onnx":  vision.onnx, text.onnx + the processor/tokenizer files

``variants.json`` (format ``pairflow-compressed/1``)::

    {"format": "pairflow-compressed/1", "chosen": "<name>", "source_digest": "...",
     "selection": {"rule": ..., "max_recall_drop": ..., "batch_size": ..., "reason": ...},
     "variants": [{"name": ..., "kind": "torch" | "onnx", "files": [relative paths],
                   "metrics": {size_bytes, params, recall_at_1, recall_delta,
                               latency_ms: {"1": {"p50", "p95"}, "32": {...}},
                               throughput_pairs_per_s, ...},
                   "chosen": bool, "description": "..."}]}

Variant names: ``fp32_torch``, ``fp32_onnx``, ``int8_onnx`` (dynamic int8, both towers),
``int8_static_onnx`` (static int8 vision tower + dynamic text tower), ``student_fp32``,
``student_int8``. :func:`pairflow.models.open.open_model` opens any of them (through
:func:`open_variant`); its ``loaded_variant`` is a :class:`LoadedVariant` whose
``embed_images`` / ``embed_texts`` give L2-normalised float32 embeddings for either kind.

Classifiers (``"task": "classifier"``, ``"labels": [...]`` in the index): torch variants are
``pairflow.stages.train`` artifacts (CLIP directory + ``pairflow_model.json`` +
``fusion_head.safetensors``), ONNX variants add ``head.onnx`` and ``classifier.json`` (see
:mod:`pairflow.models.classifier`); ``LoadedVariant.classify`` gives the class logits and
the metrics hold ``accuracy`` / ``accuracy_delta`` instead of ``recall_at_1`` /
``recall_delta`` (``metrics.metric`` names which).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pairflow.models.errors import VariantError
from pairflow.models.formats import (
    SPEC_FILE,
    TEXT_FILE,
    VISION_FILE,
)
from pairflow.models.runners import ClipRunner, OrtClip, TorchClip
from pairflow.models.variant_index import VariantIndex as VariantIndex  # re-exported
from pairflow.models.variant_index import VariantKind as VariantKind  # re-exported
from pairflow.models.variant_index import VariantRecord as VariantRecord  # re-exported

if TYPE_CHECKING:
    from transformers import CLIPProcessor

    from pairflow.models.clip import LoadedClip
    from pairflow.models.trained import TrainedModel


@dataclass
class LoadedVariant:
    """A variant ready to serve: its runner, processor and index record."""

    name: str
    kind: VariantKind
    path: Path
    runner: ClipRunner
    processor: CLIPProcessor
    record: VariantRecord | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    clip: LoadedClip | None = None  # a torch variant's CLIP towers
    trained: TrainedModel | None = None  # a torch variant's trained artifact (classifiers)

    def embed_images(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.runner.embed_images(pixel_values)

    def embed_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.runner.embed_texts(input_ids, attention_mask)

    @property
    def labels(self) -> list[str] | None:
        """Class names (columns of :meth:`classify`) of a classifier variant, else None."""
        labels: list[str] | None = getattr(self.runner, "labels", None)
        return labels

    def classify(
        self, pixel_values: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> np.ndarray:
        """Class logits (n, len(labels)) float32; :class:`VariantError` for a CLIP variant."""
        classify = getattr(self.runner, "classify", None)
        if classify is None:
            raise VariantError(f"{self.path}: variant {self.name!r} is a CLIP, not a classifier")
        logits: np.ndarray = classify(pixel_values, input_ids, attention_mask)
        return logits

    def preprocess_images(self, images: list[Any]) -> np.ndarray:
        """PIL images -> ``pixel_values`` with the variant's own image processor."""
        out = self.processor.image_processor(images=images, return_tensors="np")
        return np.asarray(out["pixel_values"], dtype=np.float32)

    def tokenize(self, captions: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Captions -> (input_ids, attention_mask) int64, padded to the longest."""
        enc = self.processor.tokenizer(captions, padding=True, truncation=True, return_tensors="np")
        return (
            np.asarray(enc["input_ids"], np.int64),
            np.asarray(enc["attention_mask"], np.int64),
        )


def load_processor(directory: Path) -> CLIPProcessor:
    # lazy: transformers (slow to import); only this path needs it
    from transformers import CLIPProcessor

    try:
        processor: CLIPProcessor = CLIPProcessor.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise VariantError(f"{directory}: cannot load the processor files ({exc})") from exc
    return processor


def open_variant(
    path: str | Path, kind: VariantKind, threads: int | None = None, name: str = ""
) -> LoadedVariant:
    """Load one variant folder of ``kind`` (no index needed): the variant reader of
    :func:`pairflow.models.open.open_model` (and of the latency worker, which times runners
    of folders it is handed); other callers go through ``open_model``."""
    directory = Path(path)
    if not directory.is_dir():
        raise VariantError(f"{directory}: variant folder not found")
    runner: ClipRunner
    clip: LoadedClip | None = None
    trained: TrainedModel | None = None
    if kind == "torch":
        # lazy: clip and trained import this module's index (an import cycle at module level)
        from pairflow.models.clip import ModelLoadError, load_clip
        from pairflow.models.formats import META_FILE
        from pairflow.models.trained import load_trained, read_meta

        try:
            meta = read_meta(directory, str(directory)) if (directory / META_FILE).is_file() else {}
            if meta.get("kind") == "classifier":
                from pairflow.models.classifier import TorchClassifier

                trained = load_trained(str(directory), device="cpu")
                runner, processor, clip = (
                    TorchClassifier(trained),
                    trained.clip.processor,
                    trained.clip,
                )
            else:
                clip = load_clip(str(directory), device="cpu")
                runner, processor = TorchClip(clip.model), clip.processor
        except ModelLoadError as exc:
            raise VariantError(str(exc)) from exc
    elif (directory / SPEC_FILE).is_file():
        from pairflow.models.classifier import OrtClassifier

        runner = OrtClassifier(directory, threads)
        processor = load_processor(directory)
    else:
        vision, text = directory / VISION_FILE, directory / TEXT_FILE
        for f in (vision, text):
            if not f.is_file():
                raise VariantError(f"{directory}: ONNX variant lacks {f.name}")
        runner = OrtClip(vision, text, threads)
        processor = load_processor(directory)
    return LoadedVariant(
        name or directory.name, kind, directory, runner, processor, clip=clip, trained=trained
    )


def load_variant(
    directory: str | Path, name: str | None = None, threads: int | None = None
) -> LoadedVariant:
    """Load variant ``name`` (default: the chosen one) from a compressed-model directory;
    ``open_model(directory, variant=name).loaded_variant`` is the same, for any reference.

    ``threads`` sets ONNX Runtime intra-op threads (torch variants use torch's setting).
    """
    root = Path(directory)
    index = VariantIndex.read(root)
    record = index.get(name or index.chosen)
    loaded = open_variant(root / record.name, record.kind, threads, record.name)
    loaded.record = record
    return loaded
