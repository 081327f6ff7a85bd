"""The photometric near-duplicate path: DCT hash of the layout luma, brightness-compensated
layout check on structured images, grey pHash for low-contrast ones (real photographs from
scikit-image)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import skimage.data
from PIL import Image, ImageEnhance

from pairflow.config import DedupeConfig
from pairflow.data.signatures import (
    IMAGE_HASH_COLUMNS,
    IMAGE_PHASH_COLUMN,
    content_hash,
    image_signature,
    layout_array,
    layout_dct_hash,
)
from pairflow.stages.dedupe.merge import dedupe_frame
from pairflow.stages.dedupe.near import (
    PhotometricRule,
    layout_distance,
    layout_structure,
    photometric_match,
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


def _pair_inputs(
    a: Image.Image, b: Image.Image
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    sa, sb = image_signature(a), image_signature(b)
    la = layout_array(np.array([[sa[c] for c in IMAGE_HASH_COLUMNS]], dtype=np.int64))
    lb = layout_array(np.array([[sb[c] for c in IMAGE_HASH_COLUMNS]], dtype=np.int64))
    dct = np.bitwise_count(
        layout_dct_hash(np.ascontiguousarray(la[:, 0]))
        ^ layout_dct_hash(np.ascontiguousarray(lb[:, 0]))
    ).astype(np.int64)
    grey = np.array(
        [int(np.bitwise_count(np.int64(sa[IMAGE_PHASH_COLUMN]) ^ np.int64(sb[IMAGE_PHASH_COLUMN])))]
    )
    return la, lb, dct, grey, layout_distance(la, lb)


def test_low_contrast_brightness_variant_is_found_through_the_grey_phash() -> None:
    """The moon (8x8 luma std ~7, below ``min_structure``) darkened and flattened: neither
    layout branch can accept it, the grey pHash branch does; without a close pHash the same
    pair is refused."""
    rule = PhotometricRule()
    moon = _photo("moon")
    darker = ImageEnhance.Contrast(ImageEnhance.Brightness(moon).enhance(0.75)).enhance(0.85)
    la, lb, dct, grey, rms = _pair_inputs(moon, darker)
    assert layout_structure(la[:, 0])[0] < rule.min_structure
    assert rms[0] > rule.loose_rms and grey[0] <= rule.phash_radius
    assert photometric_match(la, lb, dct, grey, rms, rule).tolist() == [True]
    far = np.array([rule.phash_radius + 1])
    assert photometric_match(la, lb, dct, far, rms, rule).tolist() == [False]
    rows = [_row(n, _photo(n)) for n in ("moon", "gravel", "brick", "grass")]
    rows.append(_row("moon-dark", darker))
    found = dedupe_frame(pd.DataFrame(rows), DedupeConfig()).rejected
    assert len(found) == 1 and {found["id"].iloc[0], found["duplicate_of"].iloc[0]} == {
        "moon",
        "moon-dark",
    }
    assert "phash hamming" in found["detail"].iloc[0]


def test_grey_phash_branch_refuses_a_large_level_shift() -> None:
    """Same luma shape, but a level shift no brightness edit of the dev set reached (plain
    layout RMS above ``max_rms``): not a near duplicate."""
    rule = PhotometricRule()
    moon = _photo("moon")
    arr = np.asarray(moon, dtype=np.int16)
    shifted = Image.fromarray(np.clip(arr + 90, 0, 255).astype(np.uint8))
    la, lb, dct, grey, rms = _pair_inputs(moon, shifted)
    assert grey[0] <= rule.phash_radius and rms[0] > rule.max_rms
    assert photometric_match(la, lb, dct, grey, rms, rule).tolist() == [False]
    relaxed = PhotometricRule(max_rms=float(rms[0]) + 1.0)
    assert photometric_match(la, lb, dct, grey, rms, relaxed).tolist() == [True]
