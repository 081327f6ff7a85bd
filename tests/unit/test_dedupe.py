"""dedupe_frame end to end on small hand-built frames, and the semantic (SemDeDup) stage."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pairflow.config import DedupeConfig
from pairflow.data.signatures import (
    IMAGE_HASH_COLUMNS,
    IMAGE_PHASH_COLUMN,
    content_hash,
    image_signature,
)
from pairflow.errors import InputDataError
from pairflow.stages.dedupe.merge import REASONS, DedupeResult, dedupe_frame
from pairflow.stages.dedupe.semantic import kmeans, semantic_duplicates


def _image(seed: int, size: int = 64) -> Image.Image:
    """A smooth random colour image (4x4 random colours, bicubic upscaled)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(40, 216, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def _encode(img: Image.Image, fmt: str = "PNG", quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=quality)
    return buf.getvalue()


def _row(rid: str, data: bytes, caption: str) -> dict[str, object]:
    with Image.open(io.BytesIO(data)) as im:
        img = im.convert("RGB")
    return {
        "id": rid,
        "image": f"/data/{rid}.img",
        "caption": caption,
        "label": "shape",
        "source": "test",
        "width": img.width,
        "height": img.height,
        "file_bytes": len(data),
        "img_sha256": content_hash(data),
        **image_signature(img),
    }


CAPTIONS = (
    "a red circle on a grey background",
    "two blue squares in the top left corner",
    "three yellow stars scattered around",
    "an orange triangle pointing upwards",
    "a green square next to a purple circle",
    "four small dots arranged in a line",
    "one large star in the middle of the picture",
    "several overlapping rings of different colours",
    "a striped pattern fading to white",
    "the letter q drawn with a thick pen",
)


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Ten distinct images plus planted duplicates of every kind."""
    rows = [_row(f"r{i:02d}", _encode(_image(i)), CAPTIONS[i]) for i in range(10)]
    original = _encode(_image(0))
    rows += [
        _row("x-exact", original, "another caption for zero"),  # byte copy of r00
        _row("x-jpeg", _encode(_image(1), "JPEG", 30), "jpeg copy of one"),
        _row("x-up", _encode(_image(2).resize((80, 80), Image.Resampling.BICUBIC)), "up two"),
        _row("x-crop", _encode(_image(3).crop((3, 3, 61, 61))), "crop of three"),
        _row("x-cap", _encode(_image(20, 48)), "A green square next to a PURPLE circle."),
        _row("x-empty1", _encode(_image(21)), ""),
        _row("x-empty2", _encode(_image(22)), "  "),
    ]
    return pd.DataFrame(rows)


def _by_id(result: DedupeResult) -> dict[str, tuple[str, str, str]]:
    rej = result.rejected
    return {
        str(i): (str(r), str(d), str(t))
        for i, r, d, t in zip(
            rej["id"], rej["reason"], rej["duplicate_of"], rej["detail"], strict=True
        )
    }


def test_every_kind_found_with_duplicate_of(frame: pd.DataFrame) -> None:
    result = dedupe_frame(frame, DedupeConfig())
    got = _by_id(result)
    assert {k: v[:2] for k, v in got.items()} == {
        "x-exact": ("exact_duplicate", "r00"),
        "x-jpeg": ("near_duplicate", "r01"),
        "r02": ("near_duplicate", "x-up"),  # the 80x80 copy has more pixels: it survives
        "x-crop": ("near_duplicate", "r03"),
        "x-cap": ("duplicate_caption", "r04"),
    }
    assert got["x-exact"][2] == "byte-identical to r00"
    assert got["x-jpeg"][2].startswith("hamming ") and got["x-jpeg"][2].endswith(" to r01")
    assert result.counts == {"exact_duplicate": 1, "near_duplicate": 3, "duplicate_caption": 1}
    assert set(result.rejected["stage"]) == {"dedupe"}
    assert set(result.rejected["reason"]) <= set(REASONS)
    assert len(result.kept) + len(result.rejected) == len(frame)
    assert result.kept["id"].is_monotonic_increasing
    assert result.rejected["id"].is_monotonic_increasing
    assert list(result.kept.columns) == list(frame.columns)
    near = result.metrics["near"]
    assert near["verified_pairs"] == 3 and near["pairs_checked"] >= near["candidate_pairs"] >= 3
    assert result.metrics["rows_in"] == len(frame) and result.metrics["rows_out"] == len(
        result.kept
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_result_does_not_depend_on_row_order_or_threads(frame: pd.DataFrame, seed: int) -> None:
    expected = dedupe_frame(frame, DedupeConfig(threads=1))
    shuffled = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    got = dedupe_frame(shuffled, DedupeConfig(threads=seed + 2))
    pd.testing.assert_frame_equal(got.kept, expected.kept)
    pd.testing.assert_frame_equal(got.rejected, expected.rejected)


def test_survivor_is_deterministic_for_identical_bytes(frame: pd.DataFrame) -> None:
    copies = pd.concat([frame.iloc[[0]]] * 3, ignore_index=True)
    copies["id"] = ["c", "a", "b"]
    result = dedupe_frame(copies, DedupeConfig())
    assert result.kept["id"].tolist() == ["a"]
    assert result.rejected["duplicate_of"].tolist() == ["a", "a"]


def test_stages_can_be_switched_off(frame: pd.DataFrame) -> None:
    cfg = DedupeConfig(exact=False, near=False, captions=False)
    result = dedupe_frame(frame.drop(columns=list(IMAGE_HASH_COLUMNS)), cfg)
    assert len(result.rejected) == 0 and len(result.kept) == len(frame)
    only_exact = dedupe_frame(frame, DedupeConfig(near=False, captions=False))
    assert only_exact.counts == {"exact_duplicate": 1}


def test_near_captions_with_minhash(frame: pd.DataFrame) -> None:
    extra = frame.iloc[[5]].assign(id="x-near-cap", caption=CAPTIONS[5] + " !", img_sha256="z")
    # r06's signature with every byte inverted: an image unlike any other in the frame
    extra[list(IMAGE_HASH_COLUMNS)] = ~frame.iloc[[6]][list(IMAGE_HASH_COLUMNS)].to_numpy()
    df = pd.concat([frame, extra], ignore_index=True)
    # a trailing " !" normalises away: an exact caption duplicate
    assert _by_id(dedupe_frame(df, DedupeConfig()))["x-near-cap"][0] == "duplicate_caption"
    df.loc[df["id"] == "x-near-cap", "caption"] = "four small dots arranged in one line"
    result = dedupe_frame(df, DedupeConfig(near_captions=True, minhash_threshold=0.6))
    got = _by_id(result)
    assert got["x-near-cap"][:2] == ("near_duplicate_caption", "r05")
    assert got["x-near-cap"][2].startswith("jaccard ")
    assert "r06" not in got


def test_empty_input() -> None:
    columns = ["id", "image", "caption", "width", "height", "file_bytes", "img_sha256"]
    df = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    for c in (*IMAGE_HASH_COLUMNS, IMAGE_PHASH_COLUMN):
        df[c] = pd.Series(dtype=np.int64)
    result = dedupe_frame(df, DedupeConfig(near_captions=True))
    assert len(result.kept) == 0 and len(result.rejected) == 0
    assert {"reason", "detail", "duplicate_of", "stage"} <= set(result.rejected.columns)
    assert result.counts == {}


def test_missing_signature_columns_named(frame: pd.DataFrame) -> None:
    df = frame.drop(columns=["img_sha256", IMAGE_HASH_COLUMNS[3]])
    with pytest.raises(InputDataError, match=r"img_sha256, img_layout03"):
        dedupe_frame(df, DedupeConfig())


def test_duplicate_ids_and_float_hashes_rejected(frame: pd.DataFrame) -> None:
    with pytest.raises(InputDataError, match="duplicate id"):
        dedupe_frame(pd.concat([frame, frame.iloc[[0]]], ignore_index=True), DedupeConfig())
    floats = frame.astype({IMAGE_HASH_COLUMNS[0]: np.float64})
    with pytest.raises(InputDataError, match="img_layout00 is float"):
        dedupe_frame(floats, DedupeConfig())


def test_rows_without_signature_skip_near_stage(frame: pd.DataFrame) -> None:
    df = frame.astype({c: object for c in IMAGE_HASH_COLUMNS})
    df.loc[df["id"] == "x-jpeg", list(IMAGE_HASH_COLUMNS)] = None
    got = _by_id(dedupe_frame(df, DedupeConfig()))
    assert "x-jpeg" not in got and got["x-crop"][0] == "near_duplicate"


def _planted(seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """60 random unit vectors (d=32) and 12 noisy copies of rows 0..11."""
    rng = np.random.default_rng(seed)
    base = rng.standard_normal((60, 32))
    copies = base[:12] + rng.normal(0.0, 0.02, (12, 32))
    return np.vstack([base, copies]), list(range(12))


def test_semantic_finds_planted_copies() -> None:
    emb, originals = _planted()
    priority = np.arange(len(emb), dtype=np.int64)
    result = semantic_duplicates(emb, priority, epsilon=0.05, clusters=4)
    assert result.dropped.tolist() == list(range(60, 72))
    assert result.duplicate_of.tolist() == originals
    assert (result.cosine > 0.95).all()
    assert result.clusters == 4


def test_semantic_is_order_independent_and_prefers_priority() -> None:
    emb, _ = _planted(1)
    priority = np.arange(len(emb), dtype=np.int64)[::-1].copy()  # copies now rank first
    perm = np.random.default_rng(5).permutation(len(emb))
    a = semantic_duplicates(emb, priority, 0.05, 4)
    b = semantic_duplicates(emb[perm], priority[perm], 0.05, 4)
    assert a.dropped.tolist() == list(range(12))  # the originals lose to their copies
    assert a.duplicate_of.tolist() == list(range(60, 72))
    mapping_b = dict(zip(perm[b.dropped].tolist(), perm[b.duplicate_of].tolist(), strict=True))
    assert mapping_b == dict(zip(a.dropped.tolist(), a.duplicate_of.tolist(), strict=True))


def test_kmeans_is_deterministic() -> None:
    rng = np.random.default_rng(2)
    x = rng.standard_normal((200, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    assert np.array_equal(kmeans(x, 5), kmeans(x, 5))
    assert len(np.unique(kmeans(x, 5))) <= 5
    assert kmeans(x[:3], 10).shape == (3,)


def test_semantic_stage_in_dedupe_frame(frame: pd.DataFrame) -> None:
    ids = frame["id"].tolist()
    rng = np.random.default_rng(4)
    emb = rng.standard_normal((len(ids), 16))
    emb[ids.index("r08")] = emb[ids.index("r07")] * 1.5 + 0.001  # same direction
    missing = ids.index("r09")
    keep = [i for i in range(len(ids)) if i != missing]
    embeddings = ([ids[i] for i in keep], emb[keep])
    off = dedupe_frame(frame, DedupeConfig(), embeddings)
    assert "semantic" not in off.metrics and "semantic_duplicate" not in off.counts
    cfg = DedupeConfig(embeddings=True, embedding_clusters=2)
    result = dedupe_frame(frame, cfg, embeddings)
    got = _by_id(result)
    assert got["r08"][:2] == ("semantic_duplicate", "r07")
    assert result.counts["semantic_duplicate"] == 1
    assert result.metrics["semantic"]["missing_embeddings"] == 1
    skipped = dedupe_frame(frame, cfg)
    assert skipped.metrics["semantic"] == {"skipped": "no embeddings given"}
    with pytest.raises(InputDataError, match="embeddings"):
        dedupe_frame(frame, cfg, (ids[:3], emb))


def test_identical_layouts_are_grouped_without_quadratic_pairs(frame: pd.DataFrame) -> None:
    blank = frame.iloc[[0]]
    flood = pd.concat([blank] * 400, ignore_index=True)
    flood["id"] = [f"b{i:03d}" for i in range(400)]
    flood["img_sha256"] = [f"sha-{i}" for i in range(400)]  # different bytes, same pixels
    flood["file_bytes"] = 1000 + np.arange(400)  # b399 is the largest file: it survives
    df = pd.concat([frame.iloc[1:10], flood], ignore_index=True)
    result = dedupe_frame(df, DedupeConfig(captions=False))
    near = result.metrics["near"]
    assert near["identical_layouts"] == 399
    assert near["pairs_checked"] < 1000
    rej = result.rejected
    assert len(rej) == 399 and set(rej["duplicate_of"]) == {"b399"}
    assert set(rej["detail"]) == {"identical layout to b399"}
