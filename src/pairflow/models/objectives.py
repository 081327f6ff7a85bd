"""Losses and validation metrics plugged into :func:`pairflow.models.loop.fit`.

An objective is any callable ``objective(outputs, batch) -> loss tensor`` where ``outputs`` is
what the model's ``forward(batch)`` returned (see :class:`pairflow.models.loop.Objective`).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.distributed.nn.functional import all_gather


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` from every rank (rank order); gradients flow back to each rank's part."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return x

    return torch.cat(all_gather(x), dim=0)  # type: ignore[no-untyped-call]


def contrastive_loss(
    image: torch.Tensor, text: torch.Tensor, logit_scale: torch.Tensor
) -> torch.Tensor:
    """Symmetric InfoNCE over the global batch: this rank's rows against every rank's columns.

    With DDP the loss each rank computes covers its own rows; summed gradients (DDP averages)
    equal those of the full-batch loss, since negatives come from the gathered batch.
    """
    all_image = gather_with_grad(image)
    all_text = gather_with_grad(text)
    n = image.shape[0]
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    target = torch.arange(n, device=image.device) + rank * n
    logits_i = logit_scale * image.float() @ all_text.float().T
    logits_t = logit_scale * text.float() @ all_image.float().T
    return 0.5 * (F.cross_entropy(logits_i, target) + F.cross_entropy(logits_t, target))


class ContrastiveObjective:
    """CLIP's loss on ``ClipTowers`` outputs."""

    def __call__(
        self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        del batch
        return contrastive_loss(outputs["image"], outputs["text"], outputs["logit_scale"])


class ClassificationObjective:
    """Cross-entropy of ``FusionClassifier`` logits against ``batch['label']``."""

    def __call__(
        self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        return F.cross_entropy(outputs["logits"].float(), batch["label"])


@torch.no_grad()
def clip_metrics(model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Validation loss and recall@1 in both directions over all validation pairs."""
    images, texts, scale = [], [], torch.tensor(1.0)
    for batch in batches:
        out = model(batch)
        images.append(out["image"].float())
        texts.append(out["text"].float())
        scale = out["logit_scale"].float()
    img, txt = torch.cat(images), torch.cat(texts)
    sim = img @ txt.T
    target = torch.arange(len(img))
    loss = 0.5 * (F.cross_entropy(scale * sim, target) + F.cross_entropy(scale * sim.T, target))
    i2t = float((sim.argmax(1) == target).float().mean())
    t2i = float((sim.argmax(0) == target).float().mean())
    return {
        "val_loss": float(loss),
        "val_i2t_r1": i2t,
        "val_t2i_r1": t2i,
        "val_metric": (i2t + t2i) / 2,
    }


@torch.no_grad()
def classifier_metrics(
    model: nn.Module, batches: Iterable[dict[str, torch.Tensor]]
) -> dict[str, float]:
    """Validation cross-entropy and accuracy."""
    logits, labels = [], []
    for batch in batches:
        logits.append(model(batch)["logits"].float())
        labels.append(batch["label"])
    lg, lb = torch.cat(logits), torch.cat(labels)
    acc = float((lg.argmax(1) == lb).float().mean())
    return {"val_loss": float(F.cross_entropy(lg, lb)), "val_accuracy": acc, "val_metric": acc}
