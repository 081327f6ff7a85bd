"""judge_window on logged-request records against a serving reference (seeded numbers), the
gauges it exports, and the generator's shifted source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from pairflow.demo.synthetic import COLOURS, SHIFT_COLOURS, generate_dataset
from pairflow.drift.reference import build_reference
from pairflow.errors import InputDataError
from pairflow.models.embeddings import Embeddings
from pairflow.serve.requestlog.records import to_table
from pairflow.stages.monitor.drift import judge_window
from pairflow.stages.monitor.gauges import build_registry
from pairflow.stages.monitor.reference import ChampionReference
from pairflow.stages.monitor.settings import MonitorConfig
from pairflow.stages.monitor.verdict import WindowId, WindowVerdict

DIM = 16
WINDOW = WindowId("2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00", "clip", "3")


def _unit(m: np.ndarray) -> np.ndarray:
    out: np.ndarray = m / np.linalg.norm(m, axis=1, keepdims=True)
    return out


def _pairs(n: int, seed: int, shift: float, words: int = 5) -> dict[str, Any]:
    """Captions, image sizes, embeddings and pair scores; ``shift`` moves the image
    embeddings along one axis and lengthens captions."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(words - 2, words + 3, n) + round(shift * 4)
    captions = [" ".join(["shape"] * int(w)) for w in lengths]
    img = _unit(rng.normal(0, 1, (n, DIM)) + shift * 3 * np.eye(DIM)[0])
    txt = _unit(img + rng.normal(0, 1.2, (n, DIM)))
    return {
        "captions": captions,
        "width": rng.integers(60, 68, n),
        "height": rng.integers(60, 68, n),
        "image": img,
        "text": txt,
        "score": np.einsum("ij,ij->i", img, txt),
    }


def _champion(n: int = 400) -> ChampionReference:
    p = _pairs(n, 0, 0.0)
    rows = pd.DataFrame(
        {
            "id": [f"ref-{i}" for i in range(n)],
            "image": ["x"] * n,
            "caption": p["captions"],
            "width": p["width"],
            "height": p["height"],
            "label": ["circle"] * n,
        }
    )
    emb = Embeddings(
        list(rows["id"]),
        p["image"].astype(np.float16),
        p["text"].astype(np.float16),
        p["score"].astype(np.float32),
        {"model_ref": "candidate", "model_digest": "d-cand"},
    )
    ref = build_reference(rows, emb)
    ref.meta.update(role="serving", dim=DIM)
    return ChampionReference("clip", "3", "run-1", ref)


def _records(n: int, seed: int, shift: float, version: str = "3", **over: Any) -> pa.Table:
    p = _pairs(n, seed, shift)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        {
            "request_id": f"r{seed}-{i}",
            "instance": 0,
            "ts": start + timedelta(seconds=i),
            "model_name": "clip",
            "model_version": version,
            "task": "score",
            "width": int(p["width"][i]),
            "height": int(p["height"][i]),
            "caption": p["captions"][i],
            "caption_chars": 0,  # judge_window recomputes both from the caption
            "caption_tokens": 0,
            "score": float(p["score"][i]) - over.get("score_drop", 0.0),
            "label": "circle",
            "image_emb": p["image"][i],
            "text_emb": p["text"][i],
        }
        for i in range(n)
    ]
    return to_table(rows, DIM)


def test_same_distribution_window_is_judged_calm(tmp_path: Path) -> None:
    html = tmp_path / "same.html"
    v = judge_window(_records(300, 1, 0.0), _champion(), MonitorConfig(), WINDOW, html)
    assert v.judged and not v.drift, v.reasons
    assert v.rows == 300 and v.reference_rows == 400
    assert set(v.embedding_auc) == {"image", "text"}
    assert v.embedding_auc["image"] < 0.65 and v.embedding_auc["text"] < 0.65
    assert v.drift_share is not None and v.drift_share < MonitorConfig().drift_share
    assert v.score_drop is not None and abs(v.score_drop) < 0.03 and not v.score_dropped
    assert "Embedding drift" in html.read_text()


def test_shifted_window_drifts_on_embeddings_and_captions(tmp_path: Path) -> None:
    v = judge_window(
        _records(300, 2, 1.0), _champion(), MonitorConfig(), WINDOW, tmp_path / "s.html"
    )
    assert v.judged and v.drift
    assert v.embedding_auc["image"] > 0.9
    assert {"caption_chars", "caption_tokens"} <= set(v.drifted_columns)
    assert any("image embeddings: classifier ROC AUC" in r and ">" in r for r in v.reasons)


def test_score_drop_beyond_the_margin_is_flagged(tmp_path: Path) -> None:
    cfg = MonitorConfig(score_drop_margin=0.05)
    v = judge_window(
        _records(300, 3, 0.0, score_drop=0.08), _champion(), cfg, WINDOW, tmp_path / "d.html"
    )
    assert v.score_drop is not None and 0.05 < v.score_drop < 0.12
    assert v.score_dropped and "score" in v.drifted_columns
    assert v.reference_score_mean is not None and v.score_mean is not None


def test_small_window_is_not_judged_with_a_reason(tmp_path: Path) -> None:
    cfg = MonitorConfig(min_window_rows=200)
    html = tmp_path / "small.html"
    v = judge_window(_records(150, 4, 1.0), _champion(), cfg, WINDOW, html)
    assert not v.judged and not v.drift and v.rows == 150
    assert "150 pairs of v3 < monitor.min_window_rows 200" in v.reasons[0]
    assert v.embedding_auc == {} and v.drift_share is None
    assert "not judged" in html.read_text()


def test_other_versions_rows_are_left_out_and_counted(tmp_path: Path) -> None:
    mixed = pa.concat_tables([_records(250, 5, 0.0), _records(120, 6, 1.0, version="4")])
    v = judge_window(mixed, _champion(), MonitorConfig(), WINDOW, tmp_path / "m.html")
    assert v.rows == 250 and v.judged and not v.drift, v.reasons
    assert "120 rows of other versions ['4'] left out" in v.reasons[0]


def test_records_of_another_width_or_without_columns_are_refused(tmp_path: Path) -> None:
    table = _records(10, 7, 0.0)
    with pytest.raises(InputDataError, match="records lack columns \\['score'\\]"):
        judge_window(table.drop(["score"]), _champion(), MonitorConfig(), WINDOW, tmp_path / "x")
    champ = _champion()
    champ.reference.meta["dim"] = 32
    with pytest.raises(InputDataError, match=r"embeddings are 16-d.*reference is 32-d"):
        judge_window(table, champ, MonitorConfig(), WINDOW, tmp_path / "y")


def _samples(verdict: WindowVerdict, consecutive: int) -> dict[tuple[str, str], float]:
    out = {}
    for metric in build_registry(verdict, consecutive).collect():
        for s in metric.samples:
            assert s.labels["model_name"] == "clip" and s.labels["model_version"] == "3"
            out[(s.name, s.labels.get("tower", ""))] = s.value
    return out


def test_gauges_carry_the_verdict_and_skip_what_a_skipped_window_lacks() -> None:
    judged = WindowVerdict(WINDOW, 300, 400, judged=True, drift=True, drift_share=2 / 3)
    judged.embedding_auc = {"image": 0.93, "text": 0.61}
    judged.score_drop = 0.02
    got = _samples(judged, 2)
    assert got[("pairflow_monitor_drift_share", "")] == pytest.approx(2 / 3)
    assert got[("pairflow_monitor_embedding_auc", "image")] == pytest.approx(0.93)
    assert got[("pairflow_monitor_embedding_auc", "text")] == pytest.approx(0.61)
    assert got[("pairflow_monitor_window_rows", "")] == 300
    assert got[("pairflow_monitor_drift_detected", "")] == 1
    assert got[("pairflow_monitor_consecutive_drift_windows", "")] == 2
    assert got[("pairflow_monitor_score_drop", "")] == pytest.approx(0.02)
    assert got[("pairflow_monitor_last_window_end_seconds", "")] == 1767312000
    skipped = _samples(WindowVerdict(WINDOW, 20, 400, judged=False), 2)
    assert ("pairflow_monitor_drift_share", "") not in skipped
    assert not any(name == "pairflow_monitor_embedding_auc" for name, _ in skipped)
    assert skipped[("pairflow_monitor_judged", "")] == 0
    with pytest.raises(ValueError, match="consecutive drift windows must be >= 0"):
        build_registry(judged, -1)


def test_generator_shift_draws_a_disjoint_palette(tmp_path: Path) -> None:
    base = pd.read_parquet(generate_dataset(tmp_path / "a", 60, 3, defects=False).manifest)
    moved = pd.read_parquet(
        generate_dataset(tmp_path / "b", 60, 3, defects=False, shift=True).manifest
    )
    assert not set(SHIFT_COLOURS) & set(COLOURS)
    for caption in moved["caption"]:
        words = set(caption.split())
        assert words & set(SHIFT_COLOURS) and not words & set(COLOURS), caption
    assert all(set(c.split()) & set(COLOURS) for c in base["caption"])
    assert moved["label"].tolist() == base["label"].tolist()  # same scenes otherwise
