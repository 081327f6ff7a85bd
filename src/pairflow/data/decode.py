"""Decode image bytes once, safely, into an upright RGB image.

Every stage that needs pixels goes through :func:`decode_image`: the declared size is checked
against a pixel budget *before* decoding (decompression bombs are refused, never decoded),
EXIF orientation is applied, and every mode is normalised to 8-bit RGB: CMYK, 16-bit
grayscale, palette, and alpha (composited on white) are accepted, not rejected.

What real photographs bring, and what happens to it:

- CMYK / YCCK JPEGs: converted to RGB (through their ICC profile when they carry one);
- progressive JPEGs: decoded like baseline ones (DCT scaling included);
- 16-bit PNGs: grey is rescaled by its peak, RGB is reduced to 8 bits per channel;
- animated GIF/WebP/PNG: the first frame is the image (``DecodedImage.frames`` says how many);
- an embedded ICC profile other than sRGB (Adobe RGB, Display P3, a CMYK press profile):
  pixels are converted to sRGB, so colours (and signatures) match the sRGB copy; a profile
  that cannot be parsed is ignored and the pixels are taken as sRGB, as browsers do;
- truncated downloads: rejected as ``corrupt_image`` with a detail that says truncated.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps, UnidentifiedImageError

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
    frames: int = 1  # animated images: the first frame is decoded


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


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
_ICC_MODES = frozenset({"RGB", "CMYK"})


def to_srgb(img: Image.Image) -> Image.Image:
    """``img`` with its embedded ICC profile (if any, and not sRGB) converted to sRGB."""
    icc = img.info.get("icc_profile")
    if not icc or img.mode not in _ICC_MODES:
        return img
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "srgb" in ImageCms.getProfileDescription(profile).lower():
            return img
        return ImageCms.profileToProfile(img, profile, _SRGB, outputMode="RGB") or img
    except (OSError, ValueError, ImageCms.PyCMSError):
        return img  # an unreadable profile: the pixels are taken as sRGB (documented above)


def _corrupt(exc: BaseException) -> DecodeError:
    text = str(exc)
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return DecodeError("corrupt_image", f"truncated file (download cut short?): {text}")
    return DecodeError("corrupt_image", f"decode: {text}")


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
        frames = int(getattr(img, "n_frames", 1))
        img.load()
        if "exif" in img.info:  # orientation lives in EXIF; parsing absent EXIF costs ~5 us
            img = ImageOps.exif_transpose(img) or img
        rgb = to_rgb(to_srgb(img))
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise _corrupt(exc) from exc
    if rgb.size != drafted:  # EXIF rotated by 90 or 270 degrees
        full_w, full_h = full_h, full_w
    return DecodedImage(
        image=rgb, format=fmt, mode=mode, width=full_w, height=full_h, frames=frames
    )
