"""Trainable modules: CLIP contrastive towers and the fusion classifier, plus LoRA.

Every module's ``forward(batch)`` takes the collated batch dict and returns what its objective
(``pairflow.models.objectives``) needs, so DDP wraps the whole forward.

Fusion heads (on the CLIP towers' outputs):

- ``concat``: MLP over ``[image_emb; text_emb]``;
- ``gated``: ``g = sigmoid(W [i; t])``, ``h = g * i + (1 - g) * t``, then a linear layer;
- ``late``: per-class prototypes in each modality, logits = ``exp(t) * (cos(i, P_i) +
  cos(t, P_t)) / 2`` with a learnable temperature;
- ``cross_attention``: text token states attend over image patch states (real sequences from
  both towers' last hidden states), masked mean over text tokens, then a linear layer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from pairflow.models import objectives
from pairflow.models.clip import features

if TYPE_CHECKING:
    from transformers import CLIPModel

    from pairflow.models.loop import Objective

FUSIONS = ("concat", "gated", "late", "cross_attention")
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
MAX_LOGIT_SCALE = math.log(100.0)


class ClipTowers(nn.Module):
    """A CLIPModel whose forward returns normalised image/text embeddings and the logit scale."""

    def __init__(self, clip: CLIPModel) -> None:
        super().__init__()
        self.clip = clip

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        img = self.clip.get_image_features(pixel_values=batch["pixel_values"])
        txt = self.clip.get_text_features(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        )
        return {
            "image": F.normalize(features(img), dim=-1),
            "text": F.normalize(features(txt), dim=-1),
            "logit_scale": self.clip.logit_scale.clamp(0, MAX_LOGIT_SCALE).exp(),
        }


def tower_outputs(clip: CLIPModel, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Projected embeddings and token/patch sequences of both towers in one pass."""
    vis = clip.vision_model(pixel_values=batch["pixel_values"])
    txt = clip.text_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    return {
        "image": clip.visual_projection(vis.pooler_output),
        "text": clip.text_projection(txt.pooler_output),
        "patches": vis.last_hidden_state,
        "tokens": txt.last_hidden_state,
        "mask": batch["attention_mask"],
    }


class FusionHead(nn.Module):
    """Maps tower outputs to class logits; ``kind`` is one of :data:`FUSIONS`."""

    def __init__(
        self, kind: str, embed_dim: int, text_hidden: int, vision_hidden: int, n_classes: int
    ) -> None:
        super().__init__()
        if kind not in FUSIONS:
            raise ValueError(f"unknown fusion {kind!r}; expected one of {FUSIONS}")
        self.kind = kind
        d = embed_dim
        if kind == "concat":
            self.mlp = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, n_classes))
        elif kind == "gated":
            self.gate = nn.Linear(2 * d, d)
            self.out = nn.Linear(d, n_classes)
        elif kind == "late":
            self.proto_image = nn.Parameter(torch.randn(n_classes, d) * 0.02)
            self.proto_text = nn.Parameter(torch.randn(n_classes, d) * 0.02)
            self.log_temp = nn.Parameter(torch.tensor(math.log(10.0)))
        else:
            self.q = nn.Linear(text_hidden, d)
            self.kv = nn.Linear(vision_hidden, d)
            heads = 4 if d % 4 == 0 else 1
            self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
            self.norm = nn.LayerNorm(d)
            self.out = nn.Linear(d, n_classes)

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def forward(self, feats: dict[str, torch.Tensor]) -> torch.Tensor:
        img, txt = feats["image"], feats["text"]
        if self.kind == "concat":
            logits: torch.Tensor = self.mlp(torch.cat([img, txt], dim=-1))
            return logits
        if self.kind == "gated":
            g = torch.sigmoid(self.gate(torch.cat([img, txt], dim=-1)))
            logits = self.out(g * img + (1 - g) * txt)
            return logits
        if self.kind == "late":
            cos_i = F.normalize(img, dim=-1) @ F.normalize(self.proto_image, dim=-1).T
            cos_t = F.normalize(txt, dim=-1) @ F.normalize(self.proto_text, dim=-1).T
            return self.log_temp.clamp(max=MAX_LOGIT_SCALE).exp() * (cos_i + cos_t) / 2
        q = self.q(feats["tokens"])
        kv = self.kv(feats["patches"])
        attended, _ = self.attn(q, kv, kv, need_weights=False)
        h = self.norm(q + attended)
        mask = feats["mask"].unsqueeze(-1).to(h.dtype)
        pooled = (h * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        logits = self.out(pooled)
        return logits


# CLIP parts that a classifier never reads, per fusion. They would get no gradient, and DDP
# (find_unused_parameters=False) fails on the next step with "Expected to have finished
# reduction in the prior iteration": the classifier freezes them instead (never handed to DDP
# or the optimizer), so every trainable parameter of every mode takes part in the loss.
# - logit_scale: the contrastive temperature; no fusion head uses it.
# - cross_attention reads the towers' token/patch sequences, not the pooled embeddings, so the
#   projections and the vision tower's post-layernorm (applied to the pooled CLS state only)
#   are never on its path.
CLASSIFIER_UNUSED: dict[str, tuple[str, ...]] = {
    "concat": ("logit_scale",),
    "gated": ("logit_scale",),
    "late": ("logit_scale",),
    "cross_attention": (
        "logit_scale",
        "visual_projection",
        "text_projection",
        "vision_model.post_layernorm",
    ),
}


def base_clip(tower: nn.Module) -> CLIPModel:
    """The CLIPModel inside ``tower`` (itself, or a peft LoRA wrapper's base model)."""
    if hasattr(tower, "get_base_model"):
        base: CLIPModel = tower.get_base_model()  # type: ignore[operator]
        return base
    return tower  # type: ignore[return-value]


def freeze_unused(tower: nn.Module, fusion: str) -> list[str]:
    """Freeze the CLIP parts ``fusion`` never reads (see :data:`CLASSIFIER_UNUSED`); their names."""
    clip = base_clip(tower)
    frozen = []
    for name in CLASSIFIER_UNUSED[fusion]:
        if name == "logit_scale":
            clip.logit_scale.requires_grad_(False)
        else:
            freeze(clip.get_submodule(name))
        frozen.append(name)
    return frozen


class FusionClassifier(nn.Module):
    """CLIP towers + a fusion head; forward returns ``{"logits": ...}``.

    The CLIP parts the head's fusion never reads are frozen here (:func:`freeze_unused`), so
    every trainable parameter gets a gradient on every step, with or without DDP.
    """

    def __init__(self, clip: CLIPModel, head: FusionHead) -> None:
        super().__init__()
        self.clip = clip
        self.head = head
        freeze_unused(clip, head.kind)

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"logits": self.head(tower_outputs(self.clip, batch))}


def build_head(clip: CLIPModel, kind: str, n_classes: int) -> FusionHead:
    cfg: Any = clip.config
    return FusionHead(
        kind,
        int(cfg.projection_dim),
        int(cfg.text_config.hidden_size),
        int(cfg.vision_config.hidden_size),
        n_classes,
    )


def freeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(False)


def add_lora(clip: CLIPModel, rank: int, alpha: float) -> nn.Module:
    """Wrap ``clip`` with LoRA adapters (peft) on q/k/v/out projections of both towers.

    Only adapters train inside the towers; the projections and logit scale stay trainable.
    """
    # lazy: peft (slow to import); only this path needs it
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        clip,
        LoraConfig(r=rank, lora_alpha=int(alpha), target_modules=LORA_TARGETS, lora_dropout=0.0),
    )
    for name in ("visual_projection", "text_projection"):
        for p in getattr(clip, name).parameters():
            p.requires_grad_(True)
    clip.logit_scale.requires_grad_(True)
    return peft_model


@dataclass
class Trainable:
    """What one training mode trains: the module DDP wraps, its objective, the (possibly
    LoRA-wrapped) towers to export and the fusion head (classifier only)."""

    module: nn.Module
    objective: Objective
    tower: nn.Module
    head: FusionHead | None


def build_trainable(
    clip: CLIPModel,
    *,
    model: str,
    fusion: str = "concat",
    freeze_towers: bool = False,
    lora_rank: int = 0,
    lora_alpha: float = 16.0,
    n_classes: int = 0,
) -> Trainable:
    """The module and objective of a training mode (``train.model``, ``train.fusion``,
    ``train.freeze_towers``, ``train.lora_rank``); only parameters the mode uses train.

    ``clip`` is modified in place (frozen parts, LoRA adapters). Seed torch before calling:
    the head and adapters are initialised here.
    """
    if model not in ("clip", "classifier"):
        raise ValueError(f"unknown train.model {model!r}; expected 'clip' or 'classifier'")
    if freeze_towers:
        freeze(clip)
        if model == "clip":
            clip.logit_scale.requires_grad_(True)
    tower: nn.Module = add_lora(clip, lora_rank, lora_alpha) if lora_rank else clip
    if model == "clip":
        return Trainable(ClipTowers(tower), objectives.ContrastiveObjective(), tower, None)  # type: ignore[arg-type]
    if n_classes < 2:
        raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
    head = build_head(clip, fusion, n_classes)
    module = FusionClassifier(tower, head)  # type: ignore[arg-type]
    return Trainable(module, objectives.ClassificationObjective(), tower, head)


def unused_parameters(
    module: nn.Module, objective: Objective, batch: dict[str, torch.Tensor]
) -> list[str]:
    """Names of trainable parameters that one forward + backward leaves without a gradient
    (what DDP with ``find_unused_parameters=False`` refuses); gradients are cleared after."""
    module.zero_grad(set_to_none=True)
    objective(module(batch), batch).backward()  # type: ignore[no-untyped-call]
    missing = [n for n, p in module.named_parameters() if p.requires_grad and p.grad is None]
    module.zero_grad(set_to_none=True)
    return missing


def merged_clip(tower: nn.Module) -> CLIPModel:
    """The plain CLIPModel of a (possibly LoRA-wrapped) tower, adapters merged in."""
    if hasattr(tower, "merge_and_unload"):
        merged: CLIPModel = tower.merge_and_unload()  # type: ignore[operator]
        return merged
    return tower  # type: ignore[return-value]
