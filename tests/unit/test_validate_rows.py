"""Per-row validation: every kind of bad input becomes a specific reason, never a crash."""

from __future__ import annotations

import io
import struct
import tarfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pairflow.config import DataConfig, S3Config, ValidateConfig
from pairflow.data import s3 as s3io
from pairflow.data.decode import decode_image
from pairflow.data.signatures import IMAGE_SIGNATURE_COLUMNS
from pairflow.report import StageOutputs
from pairflow.stages.ingest.ingest import run_ingest
from pairflow.stages.validate.rows import ImageRules, check_image_bytes, validate_frame

CFG = ValidateConfig()
RULES = ImageRules.from_config(CFG)


def _encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def _png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares ``width`` x ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _photo(size: tuple[int, int] = (64, 48)) -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8), "RGB")


def _reason(data: bytes) -> str | None:
    return check_image_bytes(data, RULES)[0]


def test_bad_bytes_get_specific_reasons() -> None:
    jpeg = _encode(_photo(), "JPEG", quality=90)
    assert _reason(jpeg) is None
    assert _reason(jpeg[: len(jpeg) // 2]) == "corrupt_image"
    assert _reason(b"") == "empty_file"
    assert _reason(b"<html><body>404 not found</body></html>") == "not_an_image"
    assert _reason(_encode(_photo(), "GIF")) == "format_not_allowed"
    assert _reason(_encode(Image.new("RGB", (1, 1)), "PNG")) == "image_too_small"
    assert _reason(_encode(Image.new("RGB", (200, 20)), "PNG")) == "aspect_ratio"


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = _png_bomb(100_000, 100_000)
    assert len(bomb) < 200
    reason, detail, _ = check_image_bytes(bomb, RULES)
    assert reason == "decompression_bomb"
    assert "100000x100000" in detail or "pixels" in detail
    # beyond PIL's own hard limit too
    assert _reason(_png_bomb(2**31 - 1, 2**31 - 1)) == "decompression_bomb"


@pytest.mark.parametrize(
    ("mode", "fmt"),
    [
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("P", "PNG"),
        ("RGBA", "PNG"),
        ("LA", "PNG"),
        ("L", "JPEG"),
        ("RGBA", "WEBP"),
    ],
)
def test_unusual_modes_are_accepted_and_normalised(mode: str, fmt: str) -> None:
    base = _photo()
    if mode == "I;16":
        arr = (np.asarray(base.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
        img = Image.fromarray(arr)
        assert img.mode.startswith("I;16")
    elif mode == "P":
        img = base.convert("P", palette=Image.Palette.ADAPTIVE)
        img.info["transparency"] = 0
    else:
        img = base.convert(mode)
    data = _encode(img, fmt)
    reason, _, facts = check_image_bytes(data, RULES)
    assert reason is None, reason
    assert facts is not None and (facts["width"], facts["height"]) == (64, 48)
    decoded = decode_image(data)
    assert decoded.image.mode == "RGB"
    if mode == "I;16":  # rescaled, not clipped to white
        assert 20 < float(np.asarray(decoded.image).mean()) < 235


def test_exif_orientation_is_applied() -> None:
    img = _photo((80, 40))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    data = _encode(img, "JPEG", exif=exif.tobytes())
    reason, _, facts = check_image_bytes(data, RULES)
    assert reason is None
    assert facts is not None and (facts["width"], facts["height"]) == (40, 80)


def _frame(tmp_path: Path, rows: Sequence[tuple[str, bytes | None, object]]) -> pd.DataFrame:
    records = []
    for row_id, data, caption in rows:
        path = tmp_path / f"{row_id}.img"
        if data is not None:
            path.write_bytes(data)
        records.append(
            {"id": row_id, "image": str(path), "caption": caption, "label": "x", "source": "t"}
        )
    return pd.DataFrame(records)


def test_validate_frame_rejects_with_reasons_and_keeps_signatures(tmp_path: Path) -> None:
    good = _encode(_photo(), "PNG")
    df = _frame(
        tmp_path,
        [
            ("ok", good, "a red circle"),
            ("long", good, "word " * 20_000),
            ("nul", good, "a red\x00circle"),
            ("blank", good, "   \t "),
            ("missing", None, "a red circle"),
            ("trunc", good[:100], "a red circle"),
            ("garbage", good, "\x07\x08\x01\x02\x03##"),
            ("symbols", good, "#$%^&*()_+{}|:<>?~"),
        ],
    )
    result = validate_frame(df, CFG.model_copy(update={"workers": 1}))
    reasons = dict(zip(result.rejected["id"], result.rejected["reason"], strict=True))
    assert reasons == {
        "long": "caption_too_long",
        "nul": "caption_has_nul",
        "blank": "missing_caption",
        "missing": "missing_file",
        "trunc": "corrupt_image",
        "garbage": "caption_unprintable",
        "symbols": "caption_not_text",
    }
    assert result.kept["id"].tolist() == ["ok"]
    for col in ("width", "height", "img_format", "file_bytes", *IMAGE_SIGNATURE_COLUMNS):
        assert col in result.kept.columns
    assert len(result.kept) + len(result.rejected) == len(df)
    assert all(result.rejected["detail"].str.len() > 0)


def test_parallel_and_serial_agree(tmp_path: Path) -> None:
    good = _encode(_photo(), "PNG")
    rows = [(f"r{i}", good if i % 7 else b"junk", f"caption {i} words here") for i in range(1200)]
    df = _frame(tmp_path, rows)
    serial = validate_frame(df, CFG.model_copy(update={"workers": 1}))
    parallel = validate_frame(df, CFG.model_copy(update={"workers": 2}))
    assert parallel.metrics["workers"] == 2
    pd.testing.assert_frame_equal(serial.kept, parallel.kept)
    pd.testing.assert_frame_equal(serial.rejected, parallel.rejected)
    assert serial.counts == {"not_an_image": sum(1 for i in range(1200) if i % 7 == 0)}


def test_labels_and_blocked_words(tmp_path: Path) -> None:
    good = _encode(_photo(), "PNG")
    df = _frame(tmp_path, [("a", good, "a nice red circle"), ("b", good, "a spammy red circle")])
    df.loc[1, "label"] = "y"
    cfg = CFG.model_copy(
        update={"workers": 1, "allowed_labels": ["x"], "blocked_words": ["spammy"]}
    )
    result = validate_frame(df, cfg)
    assert result.rejected["reason"].tolist() == ["blocked_word"]
    df.loc[1, "caption"] = "a fine red circle"
    result = validate_frame(df, cfg)
    assert result.rejected["reason"].tolist() == ["label_not_allowed"]


def test_empty_shard_is_fine(tmp_path: Path) -> None:
    df = _frame(tmp_path, []).reindex(columns=["id", "image", "caption", "label", "source"])
    result = validate_frame(df, CFG)
    assert len(result.kept) == len(result.rejected) == 0


def test_non_utf8_webdataset_caption(tmp_path: Path) -> None:
    """Invalid UTF-8 in a tar's caption member is a rejected row, not a crashed step."""
    tar_path = tmp_path / "shard-000000.tar"
    members = {
        "k1.png": _encode(_photo(), "PNG"),
        "k1.txt": b"a red circle",
        "k2.png": _encode(_photo(), "PNG"),
        "k2.txt": b"bad \xff\xfe caption",
    }
    with tarfile.open(tar_path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    report = run_ingest(str(tar_path), StageOutputs.in_dir(tmp_path / "out"), DataConfig())
    assert report.rejected == {"caption_not_utf8": 1}
    kept = pd.read_parquet(tmp_path / "out" / "kept.parquet")
    result = validate_frame(kept, CFG.model_copy(update={"workers": 1}))
    assert result.kept["id"].tolist() == ["k1"]


def test_missing_s3_object(tmp_path: Path, s3_config: S3Config, s3_bucket: str) -> None:
    good = _encode(_photo(), "PNG")
    s3io.put_bytes(f"s3://{s3_bucket}/ok.png", good, s3_config)
    df = pd.DataFrame(
        {
            "id": ["ok", "gone"],
            "image": [f"s3://{s3_bucket}/ok.png", f"s3://{s3_bucket}/gone.png"],
            "caption": ["a red circle"] * 2,
            "label": ["x"] * 2,
            "source": ["s"] * 2,
        }
    )
    result = validate_frame(df, CFG.model_copy(update={"workers": 1}), s3_config)
    assert result.kept["id"].tolist() == ["ok"]
    assert result.rejected["reason"].tolist() == ["missing_file"]
    assert "gone.png" in result.rejected["detail"].iloc[0]


def _smooth_photo(size: tuple[int, int]) -> Image.Image:
    """A photo-like large image: smooth colour fields plus mild noise."""
    rng = np.random.default_rng(5)
    small = Image.fromarray(rng.integers(30, 225, (6, 8, 3), dtype=np.uint8), "RGB")
    base = np.asarray(small.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
    noise = rng.integers(-12, 13, base.shape, dtype=np.int16)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8), "RGB")


def test_large_jpeg_is_decoded_scaled_with_full_size_facts_and_same_signature() -> None:
    """Validate decodes a large JPEG by DCT scaling; facts and signature match a full decode."""
    from pairflow.data.signatures import (
        IMAGE_HASH_COLUMNS,
        IMAGE_PHASH_COLUMN,
        image_signature,
        layout_array,
    )
    from pairflow.stages.dedupe.near import layout_distance

    img = _smooth_photo((1024, 768))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    for kw, size in (({}, (1024, 768)), ({"exif": exif.tobytes()}, (768, 1024))):
        data = _encode(img, "JPEG", quality=90, **kw)
        scaled = decode_image(data, at_least=64)
        assert scaled.image.size[0] < 1024 / 4  # really decoded at a fraction of the size
        assert (scaled.width, scaled.height) == size
        reason, _, facts = check_image_bytes(data, RULES)
        assert reason is None and facts is not None
        assert (facts["width"], facts["height"]) == size
        full = decode_image(data).image
        assert full.size == size
        words = np.array(
            [[check_image_signature(data)[c] for c in IMAGE_HASH_COLUMNS]], dtype=np.int64
        )
        full_sig = image_signature(full)
        ref = np.array([[full_sig[c] for c in IMAGE_HASH_COLUMNS]], dtype=np.int64)
        assert layout_distance(layout_array(words), layout_array(ref))[0] < 1.0
        stored = check_image_signature(data)[IMAGE_PHASH_COLUMN]
        assert int(np.bitwise_count(np.int64(stored) ^ np.int64(full_sig[IMAGE_PHASH_COLUMN]))) <= 4
    truncated = _encode(img, "JPEG", quality=90)
    assert _reason(truncated[: len(truncated) // 2]) == "corrupt_image"


def check_image_signature(data: bytes) -> dict[str, int]:
    """The signature validate stores for ``data`` (one row through the chunk path)."""
    from pairflow.data.signatures import (
        IMAGE_HASH_COLUMNS,
        IMAGE_PHASH_COLUMN,
        grey_phashes,
        signature_words,
    )

    reason, _, facts = check_image_bytes(data, RULES)
    assert reason is None and facts is not None
    thumb = np.frombuffer(facts["signature_thumbnail"], dtype=np.uint8)
    out = dict(zip(IMAGE_HASH_COLUMNS, signature_words(thumb[None])[0].tolist(), strict=True))
    grey = np.frombuffer(facts["grey_thumbnail"], dtype=np.uint8)
    out[IMAGE_PHASH_COLUMN] = int(grey_phashes(grey[None])[0])
    return out
