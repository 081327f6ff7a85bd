"""What real photographs bring: CMYK and progressive JPEGs, 16-bit PNGs, animated GIF/WebP,
ICC profiles and truncated downloads -- each normalised or rejected with a specific reason."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage.data
from PIL import Image, ImageCms

from pairflow.config import ValidateConfig
from pairflow.data.decode import DecodeError, decode_image
from pairflow.stages.validate.rows import DECODE_AT_LEAST, ImageRules, check_image_bytes

RULES = ImageRules.from_config(ValidateConfig())


def _photo(size: tuple[int, int] = (320, 240)) -> Image.Image:
    """A real photograph (skimage's coffee), resized."""
    coffee = skimage.data.coffee()  # type: ignore[no-untyped-call]
    return Image.fromarray(coffee).resize(size, Image.Resampling.BILINEAR)


def _save(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _mean_abs(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


def test_cmyk_jpeg_is_converted_to_matching_rgb() -> None:
    rgb = _photo()
    data = _save(rgb.convert("CMYK"), "JPEG", quality=95)
    decoded = decode_image(data)
    assert decoded.mode == "CMYK" and decoded.image.mode == "RGB"
    assert _mean_abs(decoded.image, rgb) < 6.0  # the same picture, not inverted or garbled
    assert check_image_bytes(data, RULES)[0] is None


def test_progressive_jpeg_decodes_like_baseline_also_scaled() -> None:
    img = _photo((1024, 768))
    base = _save(img, "JPEG", quality=90)
    prog = _save(img, "JPEG", quality=90, progressive=True)
    assert prog != base
    assert _mean_abs(decode_image(prog).image, decode_image(base).image) < 1.0
    small = decode_image(prog, at_least=DECODE_AT_LEAST)
    assert small.image.size[0] < 1024 and (small.width, small.height) == (1024, 768)
    assert check_image_bytes(prog, RULES)[0] is None


def _png_rgb16(arr: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG of ``arr`` (h, w, 3) uint16 (PNG spec, filter 0)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    h, w, _ = arr.shape
    rows = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize("channels", ["grey", "rgb"])
def test_16_bit_png_is_reduced_to_8_bits(channels: str) -> None:
    grey = np.asarray(_photo().convert("L"), dtype=np.uint16) * 257
    if channels == "grey":
        data = _save(Image.fromarray(grey), "PNG")
    else:  # PIL writes no 16-bit RGB PNG: encode one by hand
        data = _png_rgb16(np.asarray(_photo(), dtype=np.uint16) * 257)
        assert data[24] == 16  # IHDR bit depth
    decoded = decode_image(data)
    assert decoded.image.mode == "RGB"
    ref = _photo().convert("L" if channels == "grey" else "RGB")
    got = decoded.image.convert("L") if channels == "grey" else decoded.image
    assert _mean_abs(got, ref) < 2.0  # rescaled, not clipped to white or black


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_image_decodes_its_first_frame(fmt: str) -> None:
    first = Image.new("RGB", (96, 64), (200, 30, 30))
    second = Image.new("RGB", (96, 64), (30, 30, 200))
    data = _save(first, fmt, save_all=True, append_images=[second], duration=100, loop=0)
    decoded = decode_image(data)
    assert decoded.frames == 2
    r, _, b = np.asarray(decoded.image, dtype=np.float64).reshape(-1, 3).mean(axis=0)
    assert r > 150 and b < 80  # the red first frame, not the blue second one
    reason = check_image_bytes(data, RULES)[0]
    # GIF is outside the default allowed formats: a specific reason, not a decode failure
    assert reason == ("format_not_allowed" if fmt == "GIF" else None)


def _adobe_rgb_profile() -> bytes:
    """The Adobe RGB (1998) profile embedded in skimage's rocket.jpg."""
    path = Path(skimage.data.__file__).parent / "rocket.jpg"
    with Image.open(path) as img:
        icc = img.info["icc_profile"]
    assert isinstance(icc, bytes)
    return icc


def test_icc_profile_is_converted_to_srgb() -> None:
    img = _photo()
    icc = _adobe_rgb_profile()
    tagged = _save(img, "PNG", icc_profile=icc)
    decoded = decode_image(tagged).image
    expected = ImageCms.profileToProfile(
        img,
        ImageCms.ImageCmsProfile(io.BytesIO(icc)),
        ImageCms.createProfile("sRGB"),
        outputMode="RGB",
    )
    assert expected is not None
    assert _mean_abs(decoded, expected) < 0.5
    assert _mean_abs(decoded, img) > 2.0  # really converted: Adobe RGB values differ
    # an sRGB profile and an unreadable one leave the pixels as they are
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    assert _mean_abs(decode_image(_save(img, "PNG", icc_profile=srgb)).image, img) == 0.0
    broken = _save(img, "PNG", icc_profile=b"not an icc profile")
    assert _mean_abs(decode_image(broken).image, img) == 0.0


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_download_is_rejected_as_truncated(fmt: str) -> None:
    data = _save(_photo(), fmt)
    cut = data[: int(len(data) * 0.6)]
    with pytest.raises(DecodeError) as err:
        decode_image(cut)
    assert err.value.reason == "corrupt_image"
    assert "truncated" in err.value.detail
    reason, detail, _ = check_image_bytes(cut, RULES)
    assert reason == "corrupt_image" and "truncated" in detail
