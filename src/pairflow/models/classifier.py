"""Classifier artifacts (``pairflow.stages.train``: CLIP towers + fusion head): ONNX export of the
classify path, logit parity, accuracy and the torch / ONNX Runtime classifier runners.

What is exported depends on the fusion kind (``pairflow.models.heads.FusionHead``):

- ``concat``, ``gated``, ``late``: the head reads the two projected embeddings, so the
  towers export as for a CLIP (``vision.onnx`` -> ``image_embeds``, ``text.onnx`` ->
  ``text_embeds``) and ``head.onnx`` maps ``(image_embeds, text_embeds) -> logits``;
- ``cross_attention``: the head reads the towers' token/patch sequences, so the towers also
  output ``patches`` (B, P, vision hidden) and ``tokens`` (B, S, text hidden), and
  ``head.onnx`` maps ``(tokens, patches, attention_mask) -> logits``.

Batch (and sequence) axes are dynamic everywhere. ``classifier.json`` beside the ONNX files
holds ``{"labels": [...], "fusion": kind, "sequences": bool}``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from pairflow.errors import InputDataError
from pairflow.models.errors import CompressError, ParityError, VariantError
from pairflow.models.export import export_module, export_towers
from pairflow.models.formats import HEAD_ONNX_FILE, SPEC_FILE, TEXT_FILE, VISION_FILE
from pairflow.models.runners import OrtClip, TorchClip, ort_session

if TYPE_CHECKING:
    from transformers import CLIPModel

    from pairflow.models.heads import FusionHead
    from pairflow.models.trained import TrainedModel

SEQUENCE_FUSIONS = frozenset({"cross_attention"})
EMBEDDING_FUSIONS = frozenset({"concat", "gated", "late"})
SUPPORTED_FUSIONS = SEQUENCE_FUSIONS | EMBEDDING_FUSIONS

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]


def check_fusion(kind: str, what: str) -> None:
    """:class:`CompressError` for a fusion kind this module cannot export faithfully."""
    if kind not in SUPPORTED_FUSIONS:
        raise CompressError(
            f"{what}: cannot compress a classifier with fusion head {kind!r} (supported: "
            f"{', '.join(sorted(SUPPORTED_FUSIONS))}); refusing rather than dropping the head"
        )


@dataclass(frozen=True)
class ClassifierSpec:
    labels: list[str]
    fusion: str

    @property
    def sequences(self) -> bool:
        return self.fusion in SEQUENCE_FUSIONS

    def write(self, directory: Path) -> Path:
        out = directory / SPEC_FILE
        body = {"labels": self.labels, "fusion": self.fusion, "sequences": self.sequences}
        out.write_text(json.dumps(body, indent=2) + "\n")
        return out

    @classmethod
    def read(cls, directory: Path) -> ClassifierSpec:
        path = directory / SPEC_FILE
        try:
            data = json.loads(path.read_text())
            spec = cls([str(x) for x in data["labels"]], str(data["fusion"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise VariantError(f"{path}: not a readable classifier spec ({exc})") from exc
        check_fusion(spec.fusion, str(path))
        return spec


class ImageSequenceTower(nn.Module):
    """``pixel_values -> (image_embeds, patches)``, as ``tower_outputs`` computes them."""

    def __init__(self, clip: CLIPModel) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vis = self.clip.vision_model(pixel_values=pixel_values)
        emb: torch.Tensor = self.clip.visual_projection(vis.pooler_output)
        return emb, vis.last_hidden_state


class TextSequenceTower(nn.Module):
    """``input_ids, attention_mask -> (text_embeds, tokens)``."""

    def __init__(self, clip: CLIPModel) -> None:
        super().__init__()
        self.clip = clip

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        txt = self.clip.text_model(input_ids=input_ids, attention_mask=attention_mask)
        emb: torch.Tensor = self.clip.text_projection(txt.pooler_output)
        return emb, txt.last_hidden_state


class EmbeddingHead(nn.Module):
    """``(image_embeds, text_embeds) -> logits`` for the embedding fusions."""

    def __init__(self, head: FusionHead) -> None:
        super().__init__()
        self.head = head

    def forward(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.head({"image": image_embeds, "text": text_embeds})
        return logits


class SequenceHead(nn.Module):
    """``(tokens, patches, attention_mask) -> logits`` for cross-attention fusion."""

    def __init__(self, head: FusionHead) -> None:
        super().__init__()
        self.head = head

    def forward(
        self, tokens: torch.Tensor, patches: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        # image/text embeddings are unused by this head; shapes only need to be tensors
        feats = {"image": patches[:, 0], "text": tokens[:, 0]}
        logits: torch.Tensor = self.head(
            {**feats, "tokens": tokens, "patches": patches, "mask": attention_mask}
        )
        return logits


def export_classifier(
    clip: CLIPModel,
    head: FusionHead,
    spec: ClassifierSpec,
    out_dir: Path,
    example: Batch,
) -> None:
    """Write ``vision.onnx``, ``text.onnx``, ``head.onnx`` and ``classifier.json``."""

    check_fusion(spec.fusion, str(out_dir))
    px, ids, mask = (torch.from_numpy(a) for a in example)
    if len(px) < 2:  # torch.export specialises a batch of 1
        px, ids, mask = px[:1].repeat(2, 1, 1, 1), ids[:1].repeat(2, 1), mask[:1].repeat(2, 1)
    out_dir.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("sequence", min=1, max=4096)
    head.eval()
    if not spec.sequences:
        export_towers(clip, out_dir, px, ids, mask)
        with torch.no_grad():
            img = clip.visual_projection(clip.vision_model(pixel_values=px).pooler_output)
            txt = clip.text_projection(
                clip.text_model(input_ids=ids, attention_mask=mask).pooler_output
            )
        export_module(
            EmbeddingHead(head),
            (img, txt),
            ["image_embeds", "text_embeds"],
            ["logits"],
            {"image_embeds": {0: batch}, "text_embeds": {0: batch}},
            out_dir / HEAD_ONNX_FILE,
        )
    else:
        export_module(
            ImageSequenceTower(clip),
            (px.float(),),
            ["pixel_values"],
            ["image_embeds", "patches"],
            {"pixel_values": {0: batch}},
            out_dir / VISION_FILE,
        )
        export_module(
            TextSequenceTower(clip),
            (ids, mask),
            ["input_ids", "attention_mask"],
            ["text_embeds", "tokens"],
            {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
            out_dir / TEXT_FILE,
        )
        with torch.no_grad():
            patches = clip.vision_model(pixel_values=px).last_hidden_state
            tokens = clip.text_model(input_ids=ids, attention_mask=mask).last_hidden_state
        export_module(
            SequenceHead(head),
            (tokens, patches, mask),
            ["tokens", "patches", "attention_mask"],
            ["logits"],
            {
                "tokens": {0: batch, 1: seq},
                "patches": {0: batch},
                "attention_mask": {0: batch, 1: seq},
            },
            out_dir / HEAD_ONNX_FILE,
        )
    spec.write(out_dir)


class TorchClassifier:
    """A loaded trained classifier (``pairflow.models.trained.TrainedModel``) on the CPU."""

    def __init__(self, trained: TrainedModel) -> None:

        if trained.head is None or not trained.labels:
            raise VariantError(f"{trained.clip.ref}: not a classifier (no fusion head)")
        self.trained = trained
        self.labels = list(trained.labels)
        self.clip = TorchClip(trained.clip.model)

    def embed_images(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.clip.embed_images(pixel_values)

    def embed_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.clip.embed_texts(input_ids, attention_mask)

    def classify(
        self, pixel_values: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> np.ndarray:
        with torch.inference_mode():
            logits = self.trained.classify(
                torch.from_numpy(np.asarray(pixel_values, np.float32)),
                torch.from_numpy(np.asarray(input_ids, np.int64)),
                torch.from_numpy(np.asarray(attention_mask, np.int64)),
            )
        out: np.ndarray = logits.float().cpu().numpy()
        return out


class OrtClassifier:
    """``vision.onnx`` + ``text.onnx`` + ``head.onnx`` in ONNX Runtime sessions."""

    def __init__(self, directory: Path, threads: int | None = None) -> None:

        for name in (VISION_FILE, TEXT_FILE, HEAD_ONNX_FILE, SPEC_FILE):
            if not (directory / name).is_file():
                raise VariantError(f"{directory}: ONNX classifier variant lacks {name}")
        self.spec = ClassifierSpec.read(directory)
        self.labels = self.spec.labels
        self.clip = OrtClip(directory / VISION_FILE, directory / TEXT_FILE, threads)
        self.head = ort_session(directory / HEAD_ONNX_FILE, threads)

    def embed_images(self, pixel_values: np.ndarray) -> np.ndarray:
        return self.clip.embed_images(pixel_values)

    def embed_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        return self.clip.embed_texts(input_ids, attention_mask)

    def classify(
        self, pixel_values: np.ndarray, input_ids: np.ndarray, attention_mask: np.ndarray
    ) -> np.ndarray:
        px = np.asarray(pixel_values, np.float32)
        ids = np.asarray(input_ids, np.int64)
        mask = np.asarray(attention_mask, np.int64)
        text_feeds = {"input_ids": ids, "attention_mask": mask}
        feeds: dict[str, Any]
        if self.spec.sequences:
            (patches,) = self.clip.vision.run(["patches"], {"pixel_values": px})
            (tokens,) = self.clip.text.run(["tokens"], text_feeds)
            feeds = {"tokens": tokens, "patches": patches, "attention_mask": mask}
        else:
            (img,) = self.clip.vision.run(["image_embeds"], {"pixel_values": px})
            (txt,) = self.clip.text.run(["text_embeds"], text_feeds)
            feeds = {"image_embeds": img, "text_embeds": txt}
        (logits,) = self.head.run(None, feeds)
        out: np.ndarray = np.asarray(logits, np.float32)
        return out


@dataclass(frozen=True)
class LogitParity:
    """Worst absolute logit difference and argmax agreement over ``rows`` rows."""

    max_abs_diff: float
    argmax_mismatches: int
    rows: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "logits_max_abs_diff": round(self.max_abs_diff, 8),
            "argmax_mismatches": self.argmax_mismatches,
            "logit_rows": self.rows,
        }


def check_logit_parity(
    reference: TorchClassifier | OrtClassifier,
    candidate: TorchClassifier | OrtClassifier,
    batches: list[Batch],
    tolerance: float,
    what: str,
) -> LogitParity:
    """:class:`ParityError` unless argmax is identical on every row and logits are within
    ``tolerance * max(1, |reference logits|)`` of torch's."""
    worst, scale, mismatches, rows = 0.0, 1.0, 0, 0
    first_bad = -1
    for px, ids, mask in batches:
        ref = reference.classify(px, ids, mask)
        got = candidate.classify(px, ids, mask)
        diff = np.abs(ref - got)
        worst = max(worst, float(np.max(diff)) if np.all(np.isfinite(diff)) else float("inf"))
        scale = max(scale, float(np.max(np.abs(ref))))
        bad = np.flatnonzero(ref.argmax(1) != got.argmax(1))
        if len(bad) and first_bad < 0:
            first_bad = rows + int(bad[0])
        mismatches += len(bad)
        rows += len(px)
    if rows == 0:
        raise ParityError(f"{what}: no held-out rows to check classifier parity on")
    if mismatches:
        raise ParityError(
            f"{what}: ONNX classifier fails parity with torch: argmax differs on {mismatches} "
            f"of {rows} held-out rows (first: row {first_bad}); the export is not faithful"
        )
    if worst > tolerance * scale:
        raise ParityError(
            f"{what}: ONNX classifier fails parity with torch: logits differ by up to "
            f"{worst:.3g} > {tolerance} x {scale:.3g} on held-out rows; the export is not faithful"
        )
    return LogitParity(worst, mismatches, rows)


def accuracy(
    runner: TorchClassifier | OrtClassifier, batches: list[Batch], targets: np.ndarray
) -> float:
    """Share of rows whose argmax is their label index (``targets`` in batch order)."""
    preds = np.concatenate([runner.classify(px, ids, mask).argmax(1) for px, ids, mask in batches])
    if len(preds) == 0:
        raise CompressError("accuracy needs at least one held-out row")
    return float(np.mean(preds == targets[: len(preds)]))


def label_targets(ids: list[str], frame: Any, labels: list[str], what: str) -> np.ndarray:
    """Label indices of the held-out rows ``ids`` (in order) from ``frame``'s ``label``."""

    if "label" not in frame.columns:
        raise InputDataError(f"{what}: compressing a classifier needs a 'label' column")
    by_id = dict(zip((str(i) for i in frame["id"]), frame["label"], strict=True))
    index = {name: i for i, name in enumerate(labels)}
    out = []
    for row_id in ids:
        value = by_id.get(row_id)
        if value is None or str(value) not in index:
            raise InputDataError(
                f"{what}: held-out row {row_id} has label {value!r}, not one of the model's "
                f"labels {labels}"
            )
        out.append(index[str(value)])
    return np.asarray(out, dtype=np.int64)
