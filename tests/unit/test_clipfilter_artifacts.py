"""CLIP filter artifacts: embeddings file round trip, histogram, Markdown summary, ROC-AUC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pairflow.errors import InputDataError
from pairflow.models.embeddings import (
    EMBEDDINGS_FORMAT,
    META_KEY,
    Embeddings,
    read_embeddings,
    score_quantiles,
    summary_markdown,
    write_embeddings,
    write_histogram,
)
from pairflow.stages.clip_filter.run import roc_auc


def _unit(rows: int, dim: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(rows, dim))
    unit: np.ndarray = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    return unit


def test_embeddings_round_trip(tmp_path: Path) -> None:
    img, txt = _unit(7, 16, 0), _unit(7, 16, 1)
    scores = (img.astype(np.float32) * txt.astype(np.float32)).sum(1)
    emb = Embeddings([f"id{i}" for i in range(7)], img, txt, scores, {"model_ref": "m"})
    path = write_embeddings(tmp_path / "e" / "embeddings.parquet", emb)
    back = read_embeddings(path)
    assert back.ids == emb.ids
    assert back.image.dtype == np.float16 and back.image.shape == (7, 16)
    np.testing.assert_array_equal(back.image, img)
    np.testing.assert_array_equal(back.text, txt)
    np.testing.assert_allclose(back.scores, scores, rtol=1e-6)
    assert back.meta["format"] == EMBEDDINGS_FORMAT
    assert back.meta["dim"] == 16 and back.meta["model_ref"] == "m"
    table = pq.read_table(path)
    assert table.schema.field("image_emb").type == pa.list_(pa.float16(), 16)
    # shard files concatenate as-is
    both = pa.concat_tables([table, table])
    assert both.num_rows == 14


def test_empty_embeddings_and_bad_files(tmp_path: Path) -> None:
    empty = np.zeros((0, 8), dtype=np.float16)
    path = write_embeddings(
        tmp_path / "empty.parquet", Embeddings([], empty, empty, np.zeros(0, np.float32))
    )
    assert read_embeddings(path).image.shape == (0, 8)
    with pytest.raises(ValueError, match="matching lengths"):
        write_embeddings(tmp_path / "x.parquet", Embeddings(["a"], empty, empty, np.zeros(1)))
    other = tmp_path / "other.parquet"
    pq.write_table(pa.table({"id": ["a"]}), other)
    with pytest.raises(InputDataError, match="not a pairflow embeddings file"):
        read_embeddings(other)
    (tmp_path / "junk.parquet").write_bytes(b"nope")
    with pytest.raises(InputDataError, match="unreadable embeddings file"):
        read_embeddings(tmp_path / "junk.parquet")
    meta = {"format": "something-else/9", "dim": 1}
    pq.write_table(
        pa.table({"id": ["a"]}).replace_schema_metadata({META_KEY: json.dumps(meta)}),
        tmp_path / "v9.parquet",
    )
    with pytest.raises(InputDataError, match="unsupported embeddings format"):
        read_embeddings(tmp_path / "v9.parquet")


@pytest.mark.parametrize("name", ["h.html", "h.svg", "h.png"])
def test_histogram_formats(tmp_path: Path, name: str) -> None:
    scores = np.array([0.1, 0.2, 0.3, np.nan, 0.9], dtype=np.float32)
    kept = np.array([False, False, True, False, True])
    out = write_histogram(tmp_path / name, scores, kept, cut=0.25)
    data = out.read_bytes()
    if name.endswith(".png"):
        assert data.startswith(b"\x89PNG")
    else:
        assert b"<svg" in data
        if name.endswith(".html"):
            assert data.startswith(b"<!DOCTYPE html>")
    with pytest.raises(ValueError, match="must end in"):
        write_histogram(tmp_path / "h.txt", scores, kept, cut=None)
    empty = np.zeros(0, dtype=np.float32)
    write_histogram(tmp_path / "empty.svg", empty, empty.astype(bool), cut=None)


def test_quantiles_summary_and_auc() -> None:
    scores = np.linspace(0, 1, 101).astype(np.float32)
    q = score_quantiles(np.append(scores, np.nan))
    assert q == pytest.approx({"p5": 0.05, "p25": 0.25, "p50": 0.5, "p75": 0.75, "p95": 0.95})
    assert score_quantiles(np.array([np.nan])) == {}
    md = summary_markdown(
        rows_in=10,
        kept=7,
        rejected={"clip_score_below_threshold": 2, "corrupt_image": 1},
        mode="threshold",
        cut=0.28,
        threshold=0.28,
        top_fraction=0.0,
        source_thresholds={"web": 0.3},
        quantiles=q,
        model_ref="/m",
        model_digest="ab" * 32,
        rows_per_s=123.4,
        roc_auc=0.97,
    )
    assert "keep clip_score >= 0.2800" in md and "`web` >= 0.3000" in md
    assert "| corrupt_image | 1 |" in md and "| p50 | 0.5000 |" in md
    assert "ROC-AUC" in md
    assert roc_auc(np.array([0.1, 0.2, 0.9, 0.8]), np.array([False, False, True, True])) == 1.0
    assert roc_auc(np.array([0.5, 0.5]), np.array([False, True])) == 0.5
    assert roc_auc(np.array([0.5]), np.array([True])) is None
