"""Hamming index, duplicate groups, signatures and captions (pure functions)."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest
from PIL import Image

from pairflow.data.signatures import (
    IMAGE_HASH_COLUMNS,
    IMAGE_PHASH_COLUMN,
    IMAGE_SIGNATURE_COLUMNS,
    caption_key,
    content_hash,
    grey_phashes,
    grey_thumbnail,
    image_signature,
    layout_array,
    layout_phash,
    signature_thumbnail,
    signature_words,
)
from pairflow.stages.dedupe.captions import caption_labels, near_caption_pairs, shingles
from pairflow.stages.dedupe.groups import components, group_by_labels, survivor_rank
from pairflow.stages.dedupe.near import (
    _choose_bands,
    aligned_hamming_pairs,
    brute_force_pairs,
    hamming_pairs,
    layout_distance,
)


def _random_hashes(rng: np.random.Generator, n: int) -> npt.NDArray[np.uint64]:
    return rng.integers(0, 2**64, size=n, dtype=np.uint64)


def _clustered_hashes(rng: np.random.Generator, n: int, centres: int) -> npt.NDArray[np.uint64]:
    """Hashes near a few centres (random flips), plus exact repeats."""
    base = _random_hashes(rng, centres)[rng.integers(0, centres, n)]
    flips = np.zeros(n, dtype=np.uint64)
    for _ in range(6):
        bit = rng.integers(0, 64, n).astype(np.uint64)
        flips ^= np.where(rng.random(n) < 0.5, np.uint64(1) << bit, np.uint64(0))
    return base ^ flips


def _same(a: object, b: object) -> None:
    for field in ("left", "right", "distance"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


@pytest.mark.parametrize("radius", [0, 1, 3, 6, 10, 16])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_index_matches_brute_force(radius: int, kind: str) -> None:
    rng = np.random.default_rng(radius)
    n = 700
    h = _random_hashes(rng, n) if kind == "random" else _clustered_hashes(rng, n, 15)
    expected = brute_force_pairs(h, radius)
    got = hamming_pairs(h, radius)
    _same(got, expected)
    threaded = hamming_pairs(h, radius, threads=3)  # probes on threads: the same pairs
    _same(threaded, expected)
    assert threaded.candidates == got.candidates
    if kind == "clustered":
        assert len(got) > 0
    assert got.candidates <= n * (n - 1) // 2 * got.bands


@pytest.mark.parametrize("bands", [2, 3, 4, 7])
def test_every_band_count_is_exact(bands: int) -> None:
    rng = np.random.default_rng(bands)
    h = _clustered_hashes(rng, 500, 10)
    _same(hamming_pairs(h, 6, num_bands=bands), brute_force_pairs(h, 6))


def test_index_accepts_signed_hashes_and_repeats() -> None:
    rng = np.random.default_rng(3)
    h = np.concatenate([_random_hashes(rng, 50)] * 3).view(np.int64)
    got = hamming_pairs(h, 2)
    _same(got, brute_force_pairs(h, 2))
    assert (got.distance == 0).sum() == 150  # each hash three times: 3 pairs x 50


def test_index_small_inputs_and_bad_radius() -> None:
    assert len(hamming_pairs(np.empty(0, dtype=np.int64), 6)) == 0
    assert len(hamming_pairs(np.array([5], dtype=np.int64), 6)) == 0
    with pytest.raises(ValueError):
        hamming_pairs(np.zeros(3, dtype=np.int64), 64)
    with pytest.raises(TypeError):
        hamming_pairs(np.zeros(3, dtype=np.float64), 2)  # type: ignore[arg-type]


def _aligned_reference(
    full: npt.NDArray[np.uint64], crop: npt.NDArray[np.uint64], radius: int
) -> dict[tuple[int, int], int]:
    """O(n^2): min Hamming distance over full/full, crop/full, full/crop for every i < j."""
    out: dict[tuple[int, int], int] = {}
    for i in range(len(full)):
        for j in range(i + 1, len(full)):
            d = min(
                int(np.bitwise_count(full[i] ^ full[j])),
                int(np.bitwise_count(crop[i] ^ full[j])),
                int(np.bitwise_count(full[i] ^ crop[j])),
            )
            if d <= radius:
                out[(i, j)] = d
    return out


@pytest.mark.parametrize("radius", [0, 3, 6])
def test_aligned_search_matches_brute_force_over_three_alignments(radius: int) -> None:
    rng = np.random.default_rng(10 + radius)
    n = 300
    full = _clustered_hashes(rng, n, 12)
    crop = full ^ _clustered_hashes(rng, n, 1) ^ _clustered_hashes(rng, 1, 1)[0]  # crops move
    crop[::7] = full[rng.integers(0, n, len(crop[::7]))]  # some crops match another's frame
    got = aligned_hamming_pairs(full, crop, radius)
    _same(aligned_hamming_pairs(full, crop, radius, threads=2), got)
    expected = _aligned_reference(full, crop, radius)
    keys = zip(got.left.tolist(), got.right.tolist(), strict=True)
    pairs = dict(zip(keys, got.distance.tolist(), strict=True))
    assert pairs == expected
    assert len(pairs) == len(got)  # each row pair once, with its smallest distance
    plain = brute_force_pairs(full, radius)
    only_full = set(zip(plain.left.tolist(), plain.right.tolist(), strict=True))
    assert only_full <= set(pairs)
    if radius == 6:
        assert len(set(pairs) - only_full) > 0  # found through a crop alignment only


def test_aligned_search_rejects_mismatched_views_and_bad_radius() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        aligned_hamming_pairs(np.zeros(3, dtype=np.int64), np.zeros(2, dtype=np.int64), 2)
    with pytest.raises(ValueError, match="radius"):
        aligned_hamming_pairs(np.zeros(3, dtype=np.int64), np.zeros(3, dtype=np.int64), 64)
    one = np.zeros(1, dtype=np.int64)
    assert len(aligned_hamming_pairs(one, one, 4)) == 0


def test_cost_model_uses_few_wide_bands_at_scale() -> None:
    assert [b.bits for b in _choose_bands(1_000_000, 6)] == [16, 16, 16, 16]
    assert len(_choose_bands(1000, 6)) == 7  # small inputs: pigeonhole r + 1 exact bands
    assert len(_choose_bands(10, 0)) == 1


def test_survivor_rule_pixels_then_bytes_then_id() -> None:
    df = pd.DataFrame(
        {
            "id": ["a", "b", "c", "d", "e"],
            "width": [64, 80, 80, 64, 64],
            "height": [64, 80, 80, 64, 64],
            "file_bytes": [900, 500, 700, 900, 100],
        }
    )
    order = np.arange(5, dtype=np.int64)
    rank = survivor_rank(df, order)
    assert rank.tolist() == [2, 1, 0, 3, 4]
    groups = group_by_labels(np.zeros(5, dtype=np.int64), rank)
    assert groups.survivor.tolist() == [2] * 5
    assert groups.dropped.tolist() == [0, 1, 3, 4]
    assert groups.count == 1


def test_survivor_rule_without_size_columns_falls_back_to_id() -> None:
    df = pd.DataFrame({"id": ["x", "y", "z"]})
    rank = survivor_rank(df, np.arange(3, dtype=np.int64))
    assert rank.tolist() == [0, 1, 2]


def test_components_join_chains_and_skip_unlabelled() -> None:
    rank = np.arange(6, dtype=np.int64)[::-1].copy()  # row 5 is best
    groups = components(
        6, np.array([0, 1, 3], dtype=np.int64), np.array([1, 2, 4], dtype=np.int64), rank
    )
    assert groups.survivor.tolist() == [2, 2, 2, 4, 4, 5]
    assert groups.count == 2
    labels = np.array([-1, -1, 0, 0], dtype=np.int64)
    assert group_by_labels(labels, np.arange(4, dtype=np.int64)).survivor.tolist() == [0, 1, 2, 2]


def _image(seed: int, size: int = 64) -> Image.Image:
    """A smooth random colour image (4x4 random colours, bicubic upscaled)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 216, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def _reencode(img: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        return im.convert("RGB")


def _layout(img: Image.Image) -> npt.NDArray[np.uint8]:
    sig = image_signature(img)
    return layout_array(np.array([[sig[c] for c in IMAGE_HASH_COLUMNS]], dtype=np.int64))


def test_signature_columns_and_values() -> None:
    img = _image(1)
    sig = image_signature(img)
    assert tuple(sig) == (*IMAGE_HASH_COLUMNS, IMAGE_PHASH_COLUMN)
    assert ("img_sha256", *IMAGE_HASH_COLUMNS, IMAGE_PHASH_COLUMN) == IMAGE_SIGNATURE_COLUMNS
    assert all(isinstance(v, int) and -(2**63) <= v < 2**63 for v in sig.values())
    assert image_signature(img.copy()) == sig
    luma = _layout(img)[0, 0, :64].reshape(8, 8).astype(float)
    expected = np.asarray(img.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=float)
    assert np.abs(luma - expected).max() <= 2.0


def test_batched_signature_words_equal_per_image_signatures() -> None:
    images = [_image(seed) for seed in range(20)] + [_image(3).resize((50, 37))]
    thumbs = np.stack([np.frombuffer(signature_thumbnail(im), dtype=np.uint8) for im in images])
    words = signature_words(thumbs)
    assert words.shape == (len(images), len(IMAGE_HASH_COLUMNS)) and words.dtype == np.int64
    greys = np.stack([np.frombuffer(grey_thumbnail(im), dtype=np.uint8) for im in images])
    phashes = grey_phashes(greys)
    for im, row, ph in zip(images, words, phashes, strict=True):
        sig = image_signature(im)
        assert row.tolist() == [sig[c] for c in IMAGE_HASH_COLUMNS]
        assert int(ph) == sig[IMAGE_PHASH_COLUMN]
    assert signature_words(np.empty((0, 768), dtype=np.uint8)).shape == (0, 24)
    assert grey_phashes(np.empty((0, 1024), dtype=np.uint8)).shape == (0,)


def test_grey_phash_is_the_textbook_phash() -> None:
    """The one-matrix-product pHash equals the 2-D DCT recipe (scipy), bit for bit."""
    from scipy.fft import dctn

    rng = np.random.default_rng(5)
    greys = rng.integers(0, 256, (12, 32, 32)).astype(np.uint8)
    got = grey_phashes(greys.reshape(12, -1)).view(np.uint64)
    for grey, value in zip(greys, got, strict=True):
        coef = dctn(grey.astype(np.float64), norm="ortho")[:8, :8].ravel()
        bits = (coef >= np.median(coef[1:])).astype(np.uint8)
        assert int(np.packbits(bits).view(">u8")[0]) == int(value)


@pytest.mark.parametrize("size", [(5, 5), (50, 37), (300, 200), (256, 256)])
def test_signature_any_size(size: tuple[int, int]) -> None:
    img = _image(2).resize(size)
    assert len(image_signature(img)) == len(IMAGE_HASH_COLUMNS) + 1


def test_signature_needs_rgb() -> None:
    with pytest.raises(ValueError, match="RGB"):
        image_signature(_image(1).convert("L"))


def test_layout_distance_tolerates_reencode_resize_and_crop() -> None:
    img = _image(7)
    base = _layout(img)
    variants = [
        _reencode(img, 30),
        img.resize((80, 80), Image.Resampling.BICUBIC),
        img.resize((48, 48), Image.Resampling.BICUBIC),
        img.crop((3, 3, 61, 61)),
    ]
    for variant in variants:
        assert layout_distance(base, _layout(variant))[0] < 2.9
    assert layout_distance(base, _layout(_image(8)))[0] > 10.0
    assert layout_distance(base, base)[0] == 0.0


def test_layout_phash_close_for_variants() -> None:
    img = _image(9)
    h0 = layout_phash(np.ascontiguousarray(_layout(img)[:, 0])).view(np.uint64)
    h1 = layout_phash(np.ascontiguousarray(_layout(_reencode(img, 35))[:, 0])).view(np.uint64)
    h2 = layout_phash(np.ascontiguousarray(_layout(_image(10))[:, 0])).view(np.uint64)
    assert int(np.bitwise_count(h0 ^ h1)[0]) <= 6
    assert int(np.bitwise_count(h0 ^ h2)[0]) > 6


def test_content_hash_is_sha256() -> None:
    assert content_hash(b"abc") == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("A red circle.", "a red  circle"),
        ("  Two\tblue squares!! ", "two blue squares"),
        ("ＴＷＯ stars", "two stars"),
        ("«quoted»", "quoted"),
        ("Straße", "STRASSE"),
        ("a\u200bred\x00circle\u2028", "a red circle"),  # format/control chars -> space
    ],
)
def test_caption_key_normalises(a: str, b: str) -> None:
    assert caption_key(a) == caption_key(b)


def test_caption_key_keeps_inner_punctuation_and_words() -> None:
    assert caption_key("don't stop.") == "don't stop"
    assert caption_key("a red circle") != caption_key("a red square")
    assert caption_key(" ... ") == ""


def test_caption_labels_skip_empty() -> None:
    labels = caption_labels(["a", "", "a", "b", ""])
    assert labels[0] == labels[2] >= 0
    assert labels[1] == labels[4] == -1
    assert labels[3] not in (labels[0], -1)


def test_near_caption_pairs_are_verified_jaccard() -> None:
    keys = [
        "two small red circles in the top left",
        "two small red circle in the top left",
        "a large blue square in the center",
        "",
        "three large yellow stars in the bottom right",
    ]
    left, right, score = near_caption_pairs(keys, threshold=0.7, num_perm=128)
    assert list(zip(left.tolist(), right.tolist(), strict=True)) == [(0, 1)]
    a, b = shingles(keys[0]), shingles(keys[1])
    assert score[0] == pytest.approx(len(a & b) / len(a | b))
    assert shingles("abc") == {"abc"}
