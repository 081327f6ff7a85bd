"""CLIP pixel values without the image processor, for images already at the model's size.

For an RGB image that is already S x S, a CLIP image processor's resize (shortest edge S)
and centre crop (S x S) leave the pixels unchanged, so its output is just rescale +
normalise: one subtract and one multiply per value in numpy (or torch), a fraction of the
processor's cost (PIL round trips per image). :class:`SizedPixels` holds that arithmetic;
serving (:mod:`pairflow.models.open`) and CLIP scoring (:mod:`pairflow.models.scoring`)
both use it. Anything else (other sizes or modes, non-standard settings) is left to the
processor: the helpers return ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL import Image


def _side(value: object) -> int | None:
    """An image processor's size as one side: an int, ``shortest_edge``, or equal height and
    width (a plain dict or transformers' ``SizeDict``)."""
    if isinstance(value, int):
        return value
    if value is None:
        return None

    def get(key: str) -> object:
        return value.get(key) if isinstance(value, dict) else getattr(value, key, None)

    edge, height, width = get("shortest_edge"), get("height"), get("width")
    if isinstance(edge, int):
        return edge
    if isinstance(height, int) and height == width:
        return height
    return None


@dataclass(frozen=True)
class SizedPixels:
    """Rescale + normalise of a CLIP image processor, as ``(x - shift) * mul`` per channel."""

    side: int
    shift: np.ndarray  # float32 (3,): mean / scale
    mul: np.ndarray  # float32 (3,): scale / std

    @classmethod
    def from_processor(cls, processor: Any) -> SizedPixels | None:
        """The arithmetic of ``processor`` (a CLIP image processor), or None when its
        resize/crop is not the identity for S x S images or it is not a standard one."""
        crop = _side(getattr(processor, "crop_size", None))
        size = _side(getattr(processor, "size", None))
        if crop is None or size != crop:
            return None
        if not getattr(processor, "do_resize", False) or not getattr(
            processor, "do_center_crop", False
        ):
            return None
        scale = float(processor.rescale_factor) if getattr(processor, "do_rescale", False) else 1.0
        mean, std = np.zeros(3), np.ones(3)
        if getattr(processor, "do_normalize", False):
            mean = np.asarray(processor.image_mean, dtype=np.float64)
            std = np.asarray(processor.image_std, dtype=np.float64)
            if mean.shape != (3,) or std.shape != (3,):
                return None
        return cls(crop, (mean / scale).astype(np.float32), (scale / std).astype(np.float32))

    def fits(self, image: Image.Image) -> bool:
        """True when ``image`` is RGB and exactly ``side`` x ``side``."""
        return image.mode == "RGB" and image.size == (self.side, self.side)

    def raw(self, images: Sequence[Image.Image]) -> np.ndarray | None:
        """uint8 [N, 3, S, S] of the images, or None if any does not :meth:`fit`."""
        if not images or not all(self.fits(im) for im in images):
            return None
        return np.stack([np.asarray(im, dtype=np.uint8).transpose(2, 0, 1) for im in images])

    def normalise(self, raw: np.ndarray) -> np.ndarray:
        """float32 [N, 3, S, S] pixel values of uint8 [N, 3, S, S] ``raw`` (numpy)."""
        x: np.ndarray = np.subtract(raw, self.shift.reshape(1, 3, 1, 1), dtype=np.float32)
        x *= self.mul.reshape(1, 3, 1, 1)
        return x

    def normalise_tensor(self, raw: torch.Tensor) -> torch.Tensor:
        """float32 [N, 3, S, S] pixel values of a uint8 [N, 3, S, S] tensor (torch)."""
        # lazy: torch (slow to import); only this path needs it
        import torch

        shift = torch.from_numpy(self.shift).view(1, 3, 1, 1).to(raw.device)
        mul = torch.from_numpy(self.mul).view(1, 3, 1, 1).to(raw.device)
        return raw.to(torch.float32).sub_(shift).mul_(mul)

    def __call__(self, images: Sequence[Image.Image]) -> np.ndarray | None:
        """float32 [N, 3, S, S] pixel values, or None if any image does not :meth:`fit`."""
        raw = self.raw(images)
        return None if raw is None else self.normalise(raw)


def sized_pixels(processor: Any, images: Sequence[Image.Image]) -> np.ndarray | None:
    """CLIP pixel values [N, 3, S, S] of RGB images already S x S, without the processor;
    ``None`` when any image or setting differs (the caller then uses the processor)."""
    pixels = SizedPixels.from_processor(processor)
    return None if pixels is None else pixels(images)
