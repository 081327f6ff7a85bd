"""Tests for the deterministic synthetic dataset and its injected-defect ground truth."""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image, ImageFile

from pairflow.demo.synthetic import (
    COLOUR_RGB,
    COLOURS,
    DEFECT_KINDS,
    LABELS,
    POSITIONS,
    GenerateSummary,
    generate_dataset,
)
from pairflow.errors import ConfigError
from pairflow.models.pairs import COLOUR_WORDS, names_colour

N = 120


@pytest.fixture(autouse=True)
def _strict_pil(monkeypatch: pytest.MonkeyPatch) -> None:
    """Truncated images must fail to load, whatever other tests set globally."""
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", False)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> GenerateSummary:
    return generate_dataset(tmp_path_factory.mktemp("synthetic") / "ds", n=N, seed=7)


@pytest.fixture(scope="module")
def manifest(dataset: GenerateSummary) -> pd.DataFrame:
    return _read(dataset.manifest)


@pytest.fixture(scope="module")
def truth(dataset: GenerateSummary) -> pd.DataFrame:
    return _read(dataset.ground_truth)


def _read(path: Path) -> pd.DataFrame:
    df: pd.DataFrame = pq.read_table(path).to_pandas()
    return df


def _tree_hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _decode(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im.convert("RGB")


def _small(image: Image.Image) -> npt.NDArray[np.float64]:
    return np.asarray(image.resize((32, 32), Image.Resampling.BOX), dtype=np.float64)


def _foreground(image: Image.Image) -> tuple[str, float, float]:
    """Nearest named colour and centroid (as image fractions) of the object's core pixels."""
    arr = np.asarray(image, dtype=np.float64)
    saturation = arr.max(axis=2) - arr.min(axis=2)
    mask = saturation > max(60.0, 0.75 * float(saturation.max()))
    assert mask.sum() >= 5, "no coloured object found"
    mean = arr[mask].mean(axis=0)
    colour = min(COLOURS, key=lambda c: float(np.linalg.norm(mean - np.array(COLOUR_RGB[c]))))
    ys, xs = np.nonzero(mask)
    h, w = mask.shape
    return colour, float(xs.mean()) / w, float(ys.mean()) / h


def _near_diff(original: Path, near: Path, detail: str) -> tuple[float, float]:
    """Mean abs diff at 32x32: as is, and after undoing the crop named in ``detail``."""
    a, b = _decode(original), _decode(near)
    raw = float(np.abs(_small(a) - _small(b)).mean())
    if detail.startswith("crop "):
        px = int(detail.removeprefix("crop ").removesuffix("px"))
        a = a.crop((px, px, a.width - px, a.height - px))
    return raw, float(np.abs(_small(a) - _small(b)).mean())


def test_same_seed_is_byte_identical(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", n=60, seed=3)
    b = generate_dataset(tmp_path / "b", n=60, seed=3)
    ha, hb = _tree_hashes(a.out_dir), _tree_hashes(b.out_dir)
    assert ha == hb
    assert {"manifest.parquet", "ground_truth.parquet"} <= set(ha)
    assert sum(k.startswith("images/") for k in ha) > 40
    c = generate_dataset(tmp_path / "c", n=60, seed=4)
    hc = _tree_hashes(c.out_dir)
    assert hc["manifest.parquet"] != ha["manifest.parquet"]
    shared = set(hc.values()) & set(ha.values())  # only empty files / the same junk text
    assert len(shared) <= 4


def test_rerun_into_same_dir_replaces_images(tmp_path: Path) -> None:
    out = tmp_path / "ds"
    generate_dataset(out, n=50, seed=1)
    (out / "notes.txt").write_text("keep me")
    first = _tree_hashes(out)
    calls: list[tuple[int, int]] = []
    summary = generate_dataset(
        out, n=20, seed=1, progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(i, 20) for i in range(1, 21)]
    assert (out / "notes.txt").read_text() == "keep me"
    files = list((out / "images").iterdir())
    rows = _read(summary.manifest)
    on_disk = {f"images/{p.name}" for p in files}
    assert on_disk <= set(rows["image"])
    assert len(rows) == 20
    generate_dataset(out, n=50, seed=1)
    assert _tree_hashes(out) == first


def test_manifest_and_truth_layout(
    dataset: GenerateSummary, manifest: pd.DataFrame, truth: pd.DataFrame
) -> None:
    assert list(manifest.columns) == ["id", "image", "caption", "label", "source"]
    assert len(manifest) == dataset.rows == N
    for col in manifest.columns:
        assert all(isinstance(v, str) for v in manifest[col]), col
    assert manifest["id"].is_unique
    assert manifest["image"].str.match(r"^images/\d{6}\.(png|jpg)$").all()
    assert set(manifest["label"]) <= set(LABELS)
    assert set(manifest["source"]) == {"synthetic-a", "synthetic-b"}
    assert list(truth.columns) == ["id", "kind", "duplicate_of", "detail"]
    assert truth["id"].is_unique
    assert set(truth["id"]) <= set(manifest["id"])
    assert len(truth) == round(N * 0.25)
    assert dict(Counter(truth["kind"])) == {k: v for k, v in dataset.defects.items() if v}
    assert list(dataset.defects) == list(DEFECT_KINDS)
    assert set(truth["kind"]) == set(DEFECT_KINDS)
    assert max(dataset.defects.values()) - min(dataset.defects.values()) <= 1
    dup = truth["kind"].isin(["exact_duplicate", "near_duplicate", "duplicate_caption"])
    assert truth.loc[dup, "duplicate_of"].notna().all()
    assert truth.loc[~dup, "duplicate_of"].isna().all()
    assert all(isinstance(d, str) and d for d in truth["detail"])
    assert set(truth.loc[dup, "duplicate_of"]).isdisjoint(truth["id"])  # originals are clean
    assert (truth.loc[dup, "duplicate_of"] < truth.loc[dup, "id"]).all()  # and come first


@pytest.mark.parametrize(("n", "share"), [(41, 0.25), (50, 0.1), (7, 0.5), (30, 0.0)])
def test_defect_count_is_rounded_share(tmp_path: Path, n: int, share: float) -> None:
    summary = generate_dataset(tmp_path, n=n, seed=5, defect_share=share, image_size=32)
    gt = _read(summary.ground_truth)
    assert len(gt) == sum(summary.defects.values()) == round(n * share)
    assert len(pq.read_table(summary.manifest)) == n


def test_each_defect_is_real(
    dataset: GenerateSummary, manifest: pd.DataFrame, truth: pd.DataFrame
) -> None:
    root = dataset.out_dir
    rows = manifest.set_index("id")
    for row in truth.itertuples(index=False):
        kind = str(row.kind)
        path = root / str(rows.at[row.id, "image"])
        caption = str(rows.at[row.id, "caption"])
        label = str(rows.at[row.id, "label"])
        dup_of = row.duplicate_of
        original = None if dup_of is None else root / str(rows.at[dup_of, "image"])
        if kind == "corrupt_file":
            assert path.stat().st_size > 0
            with pytest.raises((OSError, SyntaxError)):
                _decode(path)
        elif kind == "zero_byte_file":
            assert path.stat().st_size == 0
            assert path.suffix in {".png", ".jpg"}
        elif kind == "not_an_image":
            assert path.suffix == ".jpg" and path.stat().st_size > 0
            with pytest.raises(OSError):
                _decode(path)
        elif kind == "missing_file":
            assert not path.exists()
        elif kind == "empty_caption":
            assert caption.strip() == ""
            _decode(path)
        elif kind == "garbage_caption":
            assert caption.strip()
            assert not any(ch.isascii() and ch.isalpha() for ch in caption)
            _decode(path)
        elif kind == "exact_duplicate":
            assert original is not None and original != path
            assert path.read_bytes() == original.read_bytes()
            assert label in caption
        elif kind == "near_duplicate":
            assert original is not None
            assert path.read_bytes() != original.read_bytes()
            raw, aligned = _near_diff(original, path, str(row.detail))
            assert raw < 12.0 and aligned < 6.0, (row.detail, raw, aligned)
            assert label in caption
            assert label == rows.at[row.duplicate_of, "label"]
        elif kind == "duplicate_caption":
            assert original is not None
            assert caption == rows.at[row.duplicate_of, "caption"]
            assert path.read_bytes() != original.read_bytes()
            _decode(path)
        else:
            assert kind == "mismatched_caption"
            assert label not in caption
            assert any(shape in caption for shape in LABELS)
            _decode(path)


def test_clean_rows_describe_their_image(
    dataset: GenerateSummary, manifest: pd.DataFrame, truth: pd.DataFrame
) -> None:
    clean = manifest[~manifest["id"].isin(truth["id"])]
    assert len(clean) == N - len(truth)
    seen_formats: set[str] = set()
    for row in clean.itertuples(index=False):
        caption, label = str(row.caption), str(row.label)
        image = _decode(dataset.out_dir / str(row.image))
        assert image.size == (64, 64)
        seen_formats.add(Path(str(row.image)).suffix)
        assert label in caption
        named = [c for c in COLOURS if c in caption.split()]
        assert len(named) == 1, caption
        colour, x, y = _foreground(image)
        assert colour == named[0], (caption, colour)
        position = next(p for p in POSITIONS if f"in the {p}" in caption)
        if position == "center":
            assert 0.3 < x < 0.7 and 0.3 < y < 0.7, (caption, x, y)
        else:
            assert (y < 0.5) == position.startswith("top"), (caption, y)
            assert (x < 0.5) == position.endswith("left"), (caption, x)
    assert seen_formats == {".png", ".jpg"}


def test_without_defects_everything_is_clean(tmp_path: Path) -> None:
    summary = generate_dataset(tmp_path / "clean", n=40, seed=11, defects=False)
    gt = pq.read_table(summary.ground_truth)
    assert gt.num_rows == 0
    assert gt.schema.names == ["id", "kind", "duplicate_of", "detail"]
    assert summary.defects == dict.fromkeys(DEFECT_KINDS, 0)
    rows = _read(summary.manifest)
    assert len(rows) == 40
    for row in rows.itertuples(index=False):
        _decode(summary.out_dir / str(row.image))
        assert str(row.label) in str(row.caption)


@pytest.mark.parametrize(
    "kwargs",
    [{"n": -1}, {"seed": -2}, {"defect_share": 1.5}, {"image_size": 8}, {"defect_share": 1.0}],
)
def test_bad_arguments_raise(tmp_path: Path, kwargs: dict[str, float]) -> None:
    args: dict[str, float] = {"n": 20, "seed": 0, **kwargs}
    with pytest.raises(ConfigError):
        generate_dataset(
            tmp_path,
            n=int(args["n"]),
            seed=int(args["seed"]),
            defect_share=float(args.get("defect_share", 0.25)),
            image_size=int(args.get("image_size", 64)),
        )


def test_training_knows_every_demo_colour_word() -> None:
    """Train's hue jitter skips captions that name a colour (a hue shift would falsify them);
    its colour words are generic, and the generator's palette must be among them."""
    assert set(COLOURS) <= set(COLOUR_WORDS)
    assert all(names_colour(f"a small {c} circle on the left") for c in COLOURS)
    assert not names_colour("a small circle on the left")
