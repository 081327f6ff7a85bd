"""Demo bootstrap: a tiny reference CLIP pretrained locally on a clean synthetic split.

Nothing comes from a model hub. The tokenizer is a byte-level BPE trained here on the clean
captions with CLIP's normaliser, pre-tokeniser and vocabulary layout (256 byte symbols, the
same with ``</w>``, merged symbols in merge order, then ``<|startoftext|>`` and
``<|endoftext|>`` last), wrapped as a :class:`~transformers.CLIPTokenizer`; ``vocab.json`` and
``merges.txt`` are written too. The image processor is a ``CLIPImageProcessor`` at the
synthetic image size (64 px: nothing is upscaled to 224). Everything is saved with
``save_pretrained``, so ``CLIPModel.from_pretrained(dir)`` and
``CLIPProcessor.from_pretrained(dir)`` load it exactly as they load
``openai/clip-vit-base-patch32``.

Training runs through the train stage's loop (:func:`pairflow.models.loop.fit`: AdamW, warm-up
+ cosine) on CPU, with a demo objective, model and data set:

- symmetric InfoNCE with a learnable logit scale clamped at 100 (as the train stage's towers);
- one hard negative caption per image (NegCLIP-style): the caption with its shape word
  swapped, an extra negative column for that image, so shape must be read from pixels;
- an auxiliary linear head classifying the manifest ``label`` (the shape) from the image
  embedding; it is discarded after training;
- horizontal flips of the image with ``left``/``right`` swapped in the caption (the flip and
  the hard negative are drawn per ``(epoch, index)`` key, as the train stage's augmentation);
- the patch embedding starts as a whitened PCA of training patches, which lets the tiny ViT
  learn local shape features in a few hundred steps instead of thousands.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from pairflow.data.decode import DecodeError, decode_image
from pairflow.data.sources import read_source
from pairflow.demo.synthetic import LABELS, generate_dataset
from pairflow.models.clip import save_clip
from pairflow.models.formats import INFO_FILE
from pairflow.models.heads import MAX_LOGIT_SCALE, ClipTowers
from pairflow.models.loop import LoopSettings, fit
from pairflow.models.pairs import Key, item_seed, mirror_caption
from pairflow.models.scratch import CONTEXT_LENGTH, build_processor, tiny_clip

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor

log = logging.getLogger("pairflow.demo.reference_clip")

DEMO_DATA_SEED = 7
REFERENCE_SEED = 1234

_SHAPE_WORD = re.compile(r"\b(" + "|".join(LABELS) + r")(s?)\b")
_PCA_PATCHES = 20_000
_PCA_SCALE = 2.0
_AUX_SCALE = 10.0
_WARMUP_FRACTION = 0.05


# ---------------------------------------------------------------------------------------------
# tokenizer, processor, architecture


# ---------------------------------------------------------------------------------------------
# training


def swap_shape(caption: str, rng: random.Random) -> str:
    """``caption`` with its shape word replaced by another shape (plural kept)."""

    def other(m: re.Match[str]) -> str:
        return rng.choice([s for s in LABELS if s != m.group(1)]) + m.group(2)

    return _SHAPE_WORD.sub(other, caption, count=1)


def _load_pixels(paths: Sequence[str], processor: CLIPProcessor) -> torch.Tensor:
    images = []
    for path in paths:
        try:
            images.append(decode_image(Path(path).read_bytes()).image)
        except (OSError, DecodeError) as exc:  # a clean split: never expected
            raise RuntimeError(f"{path}: clean synthetic image unreadable ({exc})") from exc
    pixels: torch.Tensor = processor.image_processor(images=images, return_tensors="pt")[
        "pixel_values"
    ]
    return pixels


def _tokens(processor: CLIPProcessor, captions: Sequence[str]) -> dict[str, torch.Tensor]:
    enc = processor.tokenizer(
        list(captions),
        padding=True,
        truncation=True,
        max_length=CONTEXT_LENGTH,
        return_tensors="pt",
    )
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def pca_patch_init(model: CLIPModel, pixels: torch.Tensor, scale: float = _PCA_SCALE) -> None:
    """Set the patch embedding to the whitened top principal components of image patches."""
    conv = model.vision_model.embeddings.patch_embedding
    p = int(conv.kernel_size[0])
    hidden = int(conv.out_channels)
    patches = pixels.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5)
    flat = patches.reshape(-1, pixels.shape[1] * p * p)[:_PCA_PATCHES]
    flat = flat - flat.mean(0)
    _, s, v = torch.linalg.svd(flat, full_matrices=False)
    k = min(hidden, v.shape[0])
    std = (s[:k] / math.sqrt(flat.shape[0])).clamp_min(1e-6)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:k] = (v[:k] / std[:, None]).reshape(k, -1, p, p) * scale


class _PretrainSet(Dataset[dict[str, Any]]):
    """Clean pairs keyed by ``(epoch, index)`` (see :class:`pairflow.models.pairs.EpochSampler`):
    a horizontal flip with ``left``/``right`` swapped in the caption, and a hard-negative caption,
    both drawn from an RNG seeded by the key."""

    def __init__(
        self, pixels: torch.Tensor, captions: Sequence[str], labels: torch.Tensor, seed: int
    ) -> None:
        self.pixels = pixels
        self.captions = captions
        self.labels = labels
        self.seed = seed

    def __len__(self) -> int:
        return len(self.captions)

    def __getitem__(self, key: Key) -> dict[str, Any]:
        epoch, index = key
        rng = random.Random(item_seed(self.seed, epoch, index))
        pixels, caption = self.pixels[index], self.captions[index]
        if rng.random() < 0.5:
            pixels, caption = pixels.flip(-1), mirror_caption(caption)
        return {
            "pixel_values": pixels,
            "caption": caption,
            "negative": swap_shape(caption, rng),
            "label": int(self.labels[index]),
        }


class _PretrainCollate:
    """Stacked pixels; the captions' tokens, then their hard negatives' (2B text rows)."""

    def __init__(self, processor: CLIPProcessor) -> None:
        self.processor = processor

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        captions = [it["caption"] for it in items] + [it["negative"] for it in items]
        return {
            "pixel_values": torch.stack([it["pixel_values"] for it in items]),
            **_tokens(self.processor, captions),
            "label": torch.tensor([it["label"] for it in items]),
        }


class _PretrainModel(nn.Module):
    """The CLIP towers plus the auxiliary shape head on the image embedding (discarded)."""

    def __init__(self, clip: CLIPModel, n_labels: int) -> None:
        super().__init__()
        self.towers = ClipTowers(clip)
        self.aux = nn.Linear(clip.config.projection_dim or 64, n_labels)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = self.towers(batch)
        return {**out, "aux_logits": self.aux(out["image"] * _AUX_SCALE)}


class _PretrainObjective:
    """Symmetric InfoNCE whose text side holds each image's hard negative as an extra column,
    plus cross-entropy of the auxiliary head against the shape label. Keeps the last batch's
    contrastive loss (for the log and ``pairflow_reference.json``)."""

    def __init__(self) -> None:
        self.contrastive = float("nan")

    def __call__(
        self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        img, txt = outputs["image"], outputs["text"]
        n = len(img)
        logits = outputs["logit_scale"] * img @ txt.T  # (B, 2B): hard negatives on the right
        target = torch.arange(n, device=img.device)
        contrastive = 0.5 * (
            F.cross_entropy(logits, target) + F.cross_entropy(logits[:, :n].T, target)
        )
        self.contrastive = float(contrastive.detach())
        return contrastive + F.cross_entropy(outputs["aux_logits"], batch["label"])


def pretrain_reference_clip(
    out_dir: str | Path,
    *,
    n: int = 6000,
    seed: int = REFERENCE_SEED,
    epochs: int = 12,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """Pretrain the tiny reference CLIP on ``n`` clean synthetic pairs; save it to ``out_dir``.

    ``seed`` seeds the data generator and torch; it must differ from the demo data's seed
    (7) so the filter is judged on images it never saw. ``progress(epoch, epochs)`` is called
    after each epoch. ``out_dir`` gets a ``save_pretrained`` directory plus
    ``pairflow_reference.json`` (training facts).
    """
    if seed == DEMO_DATA_SEED:
        raise ValueError(f"seed {seed} is the demo data's seed; pretrain on a separate split")
    if n < 2 or epochs < 1 or batch_size < 2:
        raise ValueError("pretrain_reference_clip: need n >= 2, epochs >= 1, batch_size >= 2")
    start = time.perf_counter()
    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="pairflow-clip-pretrain-") as tmp:
        gen = generate_dataset(Path(tmp) / "data", n, seed=seed, defects=False)
        df = read_source(str(gen.manifest), "parquet")
        captions = [str(c) for c in df["caption"]]
        processor = build_processor(captions)
        pixels = _load_pixels([str(p) for p in df["image"]], processor)
    labels = torch.tensor([LABELS.index(str(v)) for v in df["label"]])
    data_s = time.perf_counter() - start

    model = tiny_clip(processor.tokenizer, seed=seed)
    pca_patch_init(model, pixels)
    objective = _PretrainObjective()
    batch = min(batch_size, n)
    steps_per_epoch = n // batch

    def on_step(step: int, total: int) -> None:
        if step % steps_per_epoch == 0:
            epoch = step // steps_per_epoch
            log.info(
                "reference CLIP: epoch %d/%d, contrastive loss %.4f",
                epoch,
                epochs,
                objective.contrastive,
            )
            if progress is not None:
                progress(epoch, epochs)

    fit(
        _PretrainModel(model, len(LABELS)),
        objective,
        _PretrainSet(pixels, captions, labels, seed),
        _PretrainCollate(processor),
        settings=LoopSettings(
            epochs=epochs,
            batch_size=batch,
            learning_rate=learning_rate,
            weight_decay=0.05,
            warmup_fraction=_WARMUP_FRACTION,
            max_grad_norm=math.inf,  # no clipping
            seed=seed,
        ),
        progress=on_step,
    )
    with torch.no_grad():  # the towers read it clamped; save it so
        model.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    info = {
        "n": n,
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "final_contrastive_loss": round(objective.contrastive, 4),
        "data_seconds": round(data_s, 1),
        "seconds": round(time.perf_counter() - start, 1),
    }
    out = save_clip(out_dir, model, processor, info)
    log.info("reference CLIP saved to %s (%s)", out, info)
    return out


def read_reference_info(model_dir: str | Path) -> dict[str, Any] | None:
    """``pairflow_reference.json`` of a pretrained reference model, or None if absent."""
    path = Path(model_dir) / INFO_FILE
    try:
        info: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return info


def ensure_reference_clip(
    out_dir: str | Path,
    *,
    n: int = 6000,
    seed: int = REFERENCE_SEED,
    epochs: int = 12,
    progress: Callable[[int, int], None] | None = None,
) -> Path:
    """``out_dir`` if it already holds a reference CLIP pretrained with these settings, else
    pretrain one there (the demo calls this, so reruns skip the minute of training)."""
    info = read_reference_info(out_dir)
    wanted = {"n": n, "seed": seed, "epochs": epochs}
    if (
        info is not None
        and all(info.get(k) == v for k, v in wanted.items())
        and (Path(out_dir) / "model.safetensors").is_file()
    ):
        return Path(out_dir)
    return pretrain_reference_clip(out_dir, n=n, seed=seed, epochs=epochs, progress=progress)
