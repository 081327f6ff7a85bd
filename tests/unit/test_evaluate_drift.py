"""Drift reference round trip and the Evidently drift report on shifted vs unshifted data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pairflow.drift.compare import compare
from pairflow.drift.reference import Reference, build_reference, read_reference, write_reference
from pairflow.models.embeddings import Embeddings
from pairflow.stages.evaluate.settings import EvaluateConfig

DIM = 16


def _rows(n: int, seed: int, shift: float) -> tuple[pd.DataFrame, Embeddings]:
    rng = np.random.default_rng(seed)
    words = rng.integers(3, 8, n) + (int(shift * 6))
    rows = pd.DataFrame(
        {
            "id": [f"r{seed}-{i}" for i in range(n)],
            "image": [f"/img/{i}.png" for i in range(n)],
            "caption": [" ".join(["word"] * int(w)) for w in words],
            "label": rng.choice(["circle", "square"], n, p=[0.5 + shift * 0.4, 0.5 - shift * 0.4]),
            "width": rng.integers(60, 68, n),
            "height": rng.integers(60, 68, n),
        }
    )

    def unit(m: np.ndarray) -> np.ndarray:
        out: np.ndarray = m / np.linalg.norm(m, axis=1, keepdims=True)
        return out

    img = unit(rng.normal(0, 1, (n, DIM)) + shift * 2 * np.eye(DIM)[0])
    txt = unit(rng.normal(0, 1, (n, DIM)) + shift * 2 * np.eye(DIM)[1])
    emb = Embeddings(
        ids=list(rows["id"]),
        image=img.astype(np.float16),
        text=txt.astype(np.float16),
        scores=rng.normal(0.3, 0.05, n).astype(np.float32),
        meta={"model_ref": "tiny", "model_digest": "d1"},
    )
    return rows, emb


def test_reference_round_trip_keeps_rows_without_embeddings(tmp_path: Path) -> None:
    rows, emb = _rows(30, 0, 0.0)
    partial = Embeddings(emb.ids[5:], emb.image[5:], emb.text[5:], emb.scores[5:], emb.meta)
    ref = build_reference(rows, partial)
    assert ref.frame["clip_score"].isna().sum() == 5
    assert ref.frame["caption_tokens"].tolist() == [len(c.split()) for c in rows["caption"]]
    back = read_reference(write_reference(tmp_path / "ref.parquet", ref))
    assert back.meta["model_digest"] == "d1" and back.meta["dim"] == DIM
    assert back.image is not None and back.text is not None
    assert np.array_equal(back.image, emb.image[5:]) and np.array_equal(back.text, emb.text[5:])
    assert back.frame["id"].tolist() == rows["id"].tolist()
    assert back.frame["width"].tolist() == rows["width"].tolist()


def test_drift_detects_a_shift_and_not_the_same_distribution(tmp_path: Path) -> None:
    cfg = EvaluateConfig()
    base = build_reference(*_rows(300, 1, 0.0))
    same = build_reference(*_rows(300, 2, 0.0))
    shifted = build_reference(*_rows(300, 3, 1.0))

    calm = compare(base, same, cfg, tmp_path / "same.html")
    assert calm.detected is False, calm.reasons
    assert calm.metrics["embedding_auc.image"] < cfg.embedding_drift_auc

    moved = compare(base, shifted, cfg, tmp_path / "shift.html")
    assert moved.detected is True
    assert moved.metrics["embedding_auc.image"] > 0.8
    assert "caption_chars" in moved.metrics["drifted_columns"]
    assert "label" in moved.metrics["drifted_columns"]
    html = (tmp_path / "shift.html").read_text()
    assert "<html" in html.lower() and len(html) > 10_000  # Evidently's rendered report


def test_drift_skips_embeddings_from_another_model(tmp_path: Path) -> None:
    cfg = EvaluateConfig()
    base = build_reference(*_rows(100, 1, 0.0))
    other = build_reference(*_rows(100, 2, 0.0))
    other.meta["model_digest"] = "d2"
    out = compare(base, other, cfg, tmp_path / "d.html")
    assert any("different CLIP models" in r for r in out.reasons)
    assert "embedding_auc.image" not in out.metrics
    missing = compare(None, other, cfg, tmp_path / "none.html", missing_reason="first run")
    assert missing.detected is None and missing.reasons == ["first run"]
    assert "first run" in (tmp_path / "none.html").read_text()
    assert isinstance(base, Reference)
