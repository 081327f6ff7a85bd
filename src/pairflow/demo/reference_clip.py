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

Training is a small loop, to be replaced by the real trainer (``pairflow.stages.train``):

- symmetric InfoNCE with a learnable logit scale clamped at 100, AdamW, warm-up + cosine;
- one hard negative caption per image (NegCLIP-style): the caption with its shape word
  swapped, an extra negative column for that image, so shape must be read from pixels;
- an auxiliary linear head classifying the manifest ``label`` (the shape) from the image
  embedding; it is discarded after training;
- horizontal flips of the image with ``left``/``right`` swapped in the caption;
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

from pairflow.data.decode import DecodeError, decode_image
from pairflow.data.sources import read_source
from pairflow.demo.synthetic import LABELS, generate_dataset
from pairflow.models.clip import features, save_clip
from pairflow.models.formats import INFO_FILE
from pairflow.models.scratch import CONTEXT_LENGTH, build_processor, tiny_clip

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor

log = logging.getLogger("pairflow.demo.reference_clip")

DEMO_DATA_SEED = 7
REFERENCE_SEED = 1234

_SHAPE_WORD = re.compile(r"\b(" + "|".join(LABELS) + r")(s?)\b")
_SIDE_WORD = re.compile(r"\b(left|right)\b")
_PCA_PATCHES = 20_000
_PCA_SCALE = 2.0
_AUX_SCALE = 10.0


# ---------------------------------------------------------------------------------------------
# tokenizer, processor, architecture


# ---------------------------------------------------------------------------------------------
# training


def swap_shape(caption: str, rng: random.Random) -> str:
    """``caption`` with its shape word replaced by another shape (plural kept)."""

    def other(m: re.Match[str]) -> str:
        return rng.choice([s for s in LABELS if s != m.group(1)]) + m.group(2)

    return _SHAPE_WORD.sub(other, caption, count=1)


def mirror_caption(caption: str) -> str:
    """The caption of the horizontally flipped image: ``left`` <-> ``right``."""
    return _SIDE_WORD.sub(lambda m: "right" if m.group(1) == "left" else "left", caption)


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


def _lr_lambda(total: int) -> Callable[[int], float]:
    warmup = max(1, total // 20)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    return factor


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
    rng = random.Random(seed)
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
    model.train()
    head = torch.nn.Linear(model.config.projection_dim or 64, len(LABELS))
    decay = [p for name, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in name]
    ids = {id(p) for p in decay}
    rest = [p for p in model.parameters() if id(p) not in ids] + list(head.parameters())
    optim = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": rest, "weight_decay": 0.0}],
        lr=learning_rate,
    )
    steps_per_epoch = n // batch_size or 1
    sched = torch.optim.lr_scheduler.LambdaLR(optim, _lr_lambda(steps_per_epoch * epochs))
    max_scale = math.log(100.0)
    gen_t = torch.Generator().manual_seed(seed)
    loss_value = float("nan")
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen_t)
        for step in range(steps_per_epoch):
            idx = order[step * batch_size : (step + 1) * batch_size]
            flip = torch.rand(len(idx), generator=gen_t) < 0.5
            batch = torch.where(flip[:, None, None, None], pixels[idx].flip(3), pixels[idx])
            caps = [
                mirror_caption(captions[i]) if f else captions[i]
                for i, f in zip(idx.tolist(), flip.tolist(), strict=True)
            ]
            texts = _tokens(processor, caps + [swap_shape(c, rng) for c in caps])
            img = F.normalize(features(model.get_image_features(pixel_values=batch)), dim=-1)
            txt = F.normalize(features(model.get_text_features(**texts)), dim=-1)
            logits = model.logit_scale.exp() * img @ txt.T  # (B, 2B): hard negatives on the right
            target = torch.arange(len(idx))
            contrastive = 0.5 * (
                F.cross_entropy(logits, target) + F.cross_entropy(logits[:, : len(idx)].T, target)
            )
            loss = contrastive + F.cross_entropy(head(img * _AUX_SCALE), labels[idx])
            optim.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optim.step()
            sched.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, max_scale)
            loss_value = float(contrastive.detach())
        log.info(
            "reference CLIP: epoch %d/%d, contrastive loss %.4f", epoch + 1, epochs, loss_value
        )
        if progress is not None:
            progress(epoch + 1, epochs)
    model.train(False)
    info = {
        "n": n,
        "seed": seed,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "final_contrastive_loss": round(loss_value, 4),
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
