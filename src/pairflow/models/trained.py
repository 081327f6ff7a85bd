"""The trained-model artifact shared by train, evaluate, compress, register and serve.

Format (one directory, no pickles):

- the CLIP towers as a Hugging Face ``save_pretrained`` directory **at the root**:
  ``config.json``, ``model.safetensors``, processor/tokenizer files (``preprocessor_config.json``,
  ``tokenizer.json``, ``vocab.json``, ``merges.txt`` ...), so
  ``pairflow.models.clip.load_clip(dir)`` and ``CLIPModel.from_pretrained(dir)`` load it
  (LoRA adapters are merged in before saving);
- ``pairflow_model.json``: ``{"format": 1, "kind": "clip" | "classifier", "labels": [...] |
  null, "fusion": {"kind": ...} | null, "base": {"ref", "digest"}, "metrics": {...},
  "train": {...}}``;
- classifier only: ``fusion_head.safetensors`` (the fusion head's ``state_dict``) whose
  architecture is fixed by ``fusion.kind``, the CLIP config and ``len(labels)``.

:func:`pairflow.models.open.open_model` opens it: its ``trained`` is the :class:`TrainedModel`
(built by :func:`with_head` from the loaded towers), with ``embed_images``, ``embed_texts``
(L2-normalised joint embeddings) and, for classifiers, ``classify`` (logits over ``labels``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from pairflow.config import S3Config
from pairflow.models.clip import LoadedClip, ModelLoadError, features, load_clip, save_clip
from pairflow.models.formats import FUSION_HEAD_FILE, META_FILE
from pairflow.models.heads import FUSIONS, FusionHead, build_head, tower_outputs
from pairflow.models.locate import first_line

FORMAT_VERSION = 1


@dataclass
class TrainedModel:
    """A loaded artifact: CLIP towers (``clip``), and for classifiers the fusion head."""

    kind: Literal["clip", "classifier"]
    clip: LoadedClip
    labels: list[str] | None
    head: FusionHead | None
    meta: dict[str, Any]

    @torch.no_grad()
    def embed_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.clip.model.get_image_features(pixel_values=pixel_values.to(self.clip.device))
        return F.normalize(features(out), dim=-1)

    @torch.no_grad()
    def embed_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        dev = self.clip.device
        out = self.clip.model.get_text_features(
            input_ids=input_ids.to(dev), attention_mask=attention_mask.to(dev)
        )
        return F.normalize(features(out), dim=-1)

    @torch.no_grad()
    def classify(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """Class logits (columns follow ``labels``); classifier artifacts only."""
        if self.head is None:
            raise ModelLoadError(f"{self.clip.ref}: a '{self.kind}' model has no classifier head")
        dev = self.clip.device
        batch = {
            "pixel_values": pixel_values.to(dev),
            "input_ids": input_ids.to(dev),
            "attention_mask": attention_mask.to(dev),
        }
        logits: torch.Tensor = self.head(tower_outputs(self.clip.model, batch))
        return logits


def save_trained(
    out_dir: str | Path,
    clip: Any,
    processor: Any,
    *,
    kind: str,
    labels: list[str] | None = None,
    head: FusionHead | None = None,
    base: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
) -> Path:
    """Write the artifact (see module docstring) into ``out_dir`` (replaced if present)."""

    if kind == "classifier" and (head is None or not labels):
        raise ValueError("a classifier artifact needs its fusion head and labels")
    out = save_clip(out_dir, clip, processor)
    if head is not None:
        state = {k: v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
        save_file(state, str(out / FUSION_HEAD_FILE))
    meta = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "labels": labels,
        "fusion": head.config() if head is not None else None,
        "base": base or {},
        "metrics": metrics or {},
        "train": train or {},
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


def read_meta(directory: Path, ref: str) -> dict[str, Any]:
    path = directory / META_FILE
    if not path.is_file():
        raise ModelLoadError(f"{ref}: no {META_FILE} (not a pairflow trained model)")
    try:
        meta: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{ref}: unreadable {META_FILE} ({exc})") from exc
    if meta.get("kind") not in ("clip", "classifier"):
        raise ModelLoadError(f"{ref}: {META_FILE} has unknown kind {meta.get('kind')!r}")
    return meta


def load_trained(
    ref: str | Path,
    s3: S3Config | None = None,
    *,
    device: str | torch.device | None = None,
    tracking_uri: str | None = None,
) -> TrainedModel:
    """The trained artifact at a directory, ``s3://`` prefix or ``models:/`` URI: the
    models-internal shortcut for ``open_model(ref, variant="torch").trained``; code outside
    :mod:`pairflow.models` calls :func:`pairflow.models.open.open_model`."""
    clip = load_clip(str(ref), s3, device=device, tracking_uri=tracking_uri)
    return with_head(clip, str(ref))


def with_head(clip: LoadedClip, ref: str) -> TrainedModel:
    """The artifact whose CLIP towers are ``clip``: its metadata and, for a classifier, the
    fusion head (on the towers' device)."""
    if clip.path is None:
        raise ModelLoadError(f"{ref}: a trained model must be a directory, S3 or MLflow artifact")
    meta = read_meta(clip.path, ref)
    head: FusionHead | None = None
    labels = meta.get("labels")
    if meta["kind"] == "classifier":
        fusion = meta.get("fusion") or {}
        if not labels or "kind" not in fusion:
            raise ModelLoadError(f"{ref}: classifier metadata lacks labels or fusion kind")
        if fusion["kind"] not in FUSIONS:
            raise ModelLoadError(
                f"{ref}: unknown fusion head {fusion['kind']!r} in {META_FILE} (expected one "
                f"of {', '.join(FUSIONS)})"
            )
        head = build_head(clip.model, str(fusion["kind"]), len(labels))
        try:
            head.load_state_dict(load_file(str(clip.path / FUSION_HEAD_FILE)))
        except (OSError, RuntimeError) as exc:
            raise ModelLoadError(
                f"{ref}: cannot load {FUSION_HEAD_FILE} ({first_line(exc)})"
            ) from exc
        head = head.to(clip.device).eval()
    return TrainedModel(meta["kind"], clip, labels, head, meta)
