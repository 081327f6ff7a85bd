"""The two CLIP towers as standalone modules: what is exported to ONNX and what torch runs.

Each tower returns the *projected* embedding (``get_image_features`` /
``get_text_features``), not yet L2-normalised; :mod:`pairflow.models.variants` normalises,
so torch and ONNX variants give the same numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pairflow.models.clip import features

if TYPE_CHECKING:
    from transformers import CLIPModel


class ImageTower(torch.nn.Module):
    """``pixel_values (B, 3, H, W) -> image_embeds (B, D)``."""

    def __init__(self, model: CLIPModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return features(self.model.get_image_features(pixel_values=pixel_values))


class TextTower(torch.nn.Module):
    """``input_ids, attention_mask (B, S) int64 -> text_embeds (B, D)``."""

    def __init__(self, model: CLIPModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return features(
            self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        )


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters (shared tensors counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total
