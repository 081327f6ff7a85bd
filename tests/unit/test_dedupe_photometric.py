"""The photometric near-duplicate path: DCT hash of the layout luma, brightness-compensated
layout check on structured images (real photographs from scikit-image)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import skimage.data
from PIL import Image, ImageEnhance

from pairflow.config import DedupeConfig
from pairflow.dedupe.merge import dedupe_frame
from pairflow.dedupe.signatures import (
    IMAGE_HASH_COLUMNS,
    content_hash,
    image_signature,
    layout_array,
    layout_dct_hash,
)


def _photo(name: str) -> Image.Image:
    arr = getattr(skimage.data, name)()
    return Image.fromarray(np.asarray(arr)).convert("RGB").resize((320, 240))


def _row(rid: str, img: Image.Image) -> dict[str, object]:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    return {
        "id": rid,
        "caption": f"caption {rid}",
        "width": img.width,
        "height": img.height,
        "file_bytes": len(data),
        "img_sha256": content_hash(data),
        **image_signature(img),
    }


def _dct(img: Image.Image) -> int:
    sig = image_signature(img)
    words = np.array([[sig[c] for c in IMAGE_HASH_COLUMNS]], dtype=np.int64)
    return int(layout_dct_hash(np.ascontiguousarray(layout_array(words)[:, 0]))[0])


def _brighter(img: Image.Image) -> Image.Image:
    return ImageEnhance.Contrast(ImageEnhance.Brightness(img).enhance(1.25)).enhance(0.85)


def test_dct_hash_keeps_luma_shape_through_brightness() -> None:
    coffee, astronaut = _photo("coffee"), _photo("astronaut")
    same = bin(_dct(coffee) ^ _dct(_brighter(coffee))).count("1")
    other = bin(_dct(coffee) ^ _dct(astronaut)).count("1")
    assert same <= 6 < 20 <= other


def test_brightness_variant_found_only_by_the_photometric_path() -> None:
    rows = [_row(n, _photo(n)) for n in ("coffee", "astronaut", "chelsea", "rocket")]
    rows.append(_row("coffee-bright", _brighter(_photo("coffee"))))
    df = pd.DataFrame(rows)
    found = dedupe_frame(df, DedupeConfig()).rejected
    assert len(found) == 1 and found["reason"].iloc[0] == "near_duplicate"
    assert {found["id"].iloc[0], found["duplicate_of"].iloc[0]} == {"coffee", "coffee-bright"}
    assert found["detail"].iloc[0].startswith("dct hamming ")
    without = dedupe_frame(df, DedupeConfig(near_photometric=False))
    assert len(without.rejected) == 0  # the absolute colour layout alone misses it
