"""Decode image bytes once, safely, into an upright RGB image.

Every stage that needs pixels goes through :func:`decode_image`: the declared size is checked
against a pixel budget *before* decoding (decompression bombs are refused, never decoded),
EXIF orientation is applied, and every mode is normalised to 8-bit RGB: CMYK, 16-bit
grayscale, palette, and alpha (composited on white) are accepted, not rejected.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000

# The pixel budget below replaces PIL's bomb warning (a per-call catch_warnings costs ~15 us
# per image); PIL's hard DecompressionBombError is still caught and reported.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


class DecodeError(Exception):
    """Bytes that are not a usable image; ``reason`` is a stable code, ``detail`` explains."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class DecodedImage:
    """An upright RGB image and what its file declared."""

    image: Image.Image
    format: str
    mode: str  # the file's original mode, before normalisation
    width: int  # after EXIF orientation
    height: int


def open_header(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open ``data`` lazily (header only); refuse non-images and oversized declarations."""
    if not data:
        raise DecodeError("empty_file", "0 bytes")
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise DecodeError("decompression_bomb", str(exc)) from exc
    except UnidentifiedImageError as exc:
        raise DecodeError("not_an_image", f"{len(data)} bytes, no known image format") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise DecodeError("corrupt_image", f"header: {exc}") from exc
    width, height = img.size
    if width * height > max_pixels:
        raise DecodeError(
            "decompression_bomb", f"declares {width}x{height} = {width * height} px > {max_pixels}"
        )
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """8-bit RGB from any PIL mode; alpha is composited on white, 16-bit is rescaled."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}:
        arr = np.asarray(img, dtype=np.float64)
        peak = float(arr.max()) if arr.size else 0.0
        scale = 255.0 / peak if peak > 255 else 1.0
        gray = np.clip(arr * scale, 0, 255).astype(np.uint8)
        return Image.fromarray(gray, "L").convert("RGB")
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode in {"RGBA", "LA", "PA", "RGBa", "La"}:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, *, at_least: int | None = None
) -> DecodedImage:
    """Decode fully (once): header checks, pixels, EXIF orientation, RGB normalisation.

    ``at_least``: the caller needs no more than ``at_least`` x ``at_least`` pixels (e.g. a
    16x16 thumbnail), so a JPEG may be decoded at 1/2, 1/4 or 1/8 scale by libjpeg's DCT
    scaling. Every entropy-coded byte is still decoded (truncation and corruption are still
    caught); only the inverse transform runs at the smaller size. ``width``/``height`` stay
    the image's full (upright) size.
    """
    img = open_header(data, max_pixels)
    fmt, mode = str(img.format or "UNKNOWN"), img.mode
    full_w, full_h = img.size
    try:
        if at_least is not None and fmt == "JPEG":
            img.draft(None, (at_least, at_least))
        drafted = img.size
        img.load()
        if "exif" in img.info:  # orientation lives in EXIF; parsing absent EXIF costs ~5 us
            img = ImageOps.exif_transpose(img) or img
        rgb = to_rgb(img)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DecodeError("corrupt_image", f"decode: {exc}") from exc
    if rgb.size != drafted:  # EXIF rotated by 90 or 270 degrees
        full_w, full_h = full_h, full_w
    return DecodedImage(image=rgb, format=fmt, mode=mode, width=full_w, height=full_h)
