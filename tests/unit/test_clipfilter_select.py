"""Keep/reject rules of the CLIP filter: threshold, top fraction, per-source thresholds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pairflow.config import ClipFilterConfig
from pairflow.models.batches import Failure
from pairflow.stages.clip_filter.select import REASON_BELOW, SCORE_COLUMN, select_rows


def _frame(n: int, sources: list[str] | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"r{i:02d}" for i in range(n)],
            "image": [f"/img/{i}.png" for i in range(n)],
            "caption": [f"caption {i}" for i in range(n)],
            "label": None,
            "source": sources if sources is not None else ["a"] * n,
        }
    )


def test_threshold_keeps_scores_at_or_above() -> None:
    df = _frame(4)
    scores = np.array([0.1, 0.28, 0.5, 0.279], dtype=np.float32)
    sel = select_rows(df, scores, {}, ClipFilterConfig(threshold=0.28))
    assert sel.mode == "threshold"
    assert sel.kept["id"].tolist() == ["r01", "r02"]
    assert sel.rejected["id"].tolist() == ["r00", "r03"]
    assert set(sel.rejected["reason"]) == {REASON_BELOW}
    assert sel.counts == {REASON_BELOW: 2}
    assert sel.rejected["detail"].iloc[0].startswith("clip_score 0.1000 < threshold 0.2800")
    np.testing.assert_allclose(sel.kept[SCORE_COLUMN], [0.28, 0.5], rtol=1e-6)
    np.testing.assert_allclose(sel.rejected[SCORE_COLUMN], [0.1, 0.279], rtol=1e-6)
    assert sel.keep.tolist() == [False, True, True, False]


def test_top_fraction_breaks_ties_by_id_deterministically() -> None:
    df = _frame(6).iloc[::-1].reset_index(drop=True)  # ids in descending order
    scores = np.array([0.5, 0.5, 0.5, 0.9, 0.1, 0.5], dtype=np.float32)
    cfg = ClipFilterConfig(top_fraction=0.5, threshold=0.99)  # threshold ignored in this mode
    sel = select_rows(df, scores, {}, cfg)
    # ceil(0.5 * 6) = 3: r02 (0.9), then the two smallest ids among the 0.5 ties
    assert sorted(sel.kept["id"]) == ["r00", "r02", "r03"]
    assert sel.mode == "top_fraction"
    assert sel.cut == pytest.approx(0.5)
    assert sel.kept["id"].tolist() == ["r03", "r02", "r00"]  # input order preserved
    again = select_rows(df.sample(frac=1, random_state=1), scores, {}, cfg)
    assert len(again.kept) == 3
    assert all("ranks" in d for d in sel.rejected["detail"])


def test_per_source_thresholds_override_global() -> None:
    df = _frame(4, sources=["web", "web", "curated", "curated"])
    scores = np.array([0.35, 0.45, 0.15, 0.25], dtype=np.float32)
    cfg = ClipFilterConfig(threshold=0.3, source_thresholds={"web": 0.4, "curated": 0.2})
    sel = select_rows(df, scores, {}, cfg)
    assert sel.kept["id"].tolist() == ["r01", "r03"]
    assert sel.thresholds == {"web": 0.4, "curated": 0.2}
    assert "for source web" in sel.rejected["detail"].iloc[0]


def test_unscored_rows_are_rejected_with_their_failure() -> None:
    df = _frame(3)
    scores = np.array([0.9, np.nan, 0.9], dtype=np.float32)
    failures = {1: Failure("corrupt_image", "/img/1.png: truncated")}
    for cfg in (ClipFilterConfig(), ClipFilterConfig(top_fraction=0.5)):
        sel = select_rows(df, scores, failures, cfg)
        assert "r01" in set(sel.rejected["id"])
        row = sel.rejected.set_index("id").loc["r01"]
        assert row["reason"] == "corrupt_image"
        assert np.isnan(row[SCORE_COLUMN])
        assert len(sel.kept) + len(sel.rejected) == 3
        assert set(sel.rejected.columns) >= {"reason", "detail", "stage", SCORE_COLUMN}


def test_empty_frame() -> None:
    sel = select_rows(_frame(0), np.zeros(0, dtype=np.float32), {}, ClipFilterConfig())
    assert sel.kept.empty and sel.rejected.empty
    sel = select_rows(
        _frame(0), np.zeros(0, dtype=np.float32), {}, ClipFilterConfig(top_fraction=0.3)
    )
    assert sel.cut is None
