"""The held-out split is stable, sized as configured and disjoint from the training rows."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pairflow.config import SplitConfig, load_config
from pairflow.data.split import DEFAULT_SALT, holdout_mask, split_frame, split_holdout
from pairflow.errors import ConfigError


def test_split_is_stable_disjoint_and_near_the_fraction() -> None:
    ids = [f"row-{i}" for i in range(4000)]
    frame = pd.DataFrame({"id": ids, "x": range(4000)})
    train, held = split_holdout(frame, 0.2)
    assert set(train["id"]).isdisjoint(held["id"])
    assert len(train) + len(held) == len(frame)
    assert 0.17 < len(held) / len(frame) < 0.23
    # Same ids in another order and a subset: membership is decided per id, not by position.
    shuffled = frame.sample(frac=0.5, random_state=3)
    _, held2 = split_holdout(shuffled, 0.2)
    assert set(held2["id"]) == set(held["id"]) & set(shuffled["id"])


def test_salt_redraws_the_split_and_bad_fraction_is_refused() -> None:
    ids = [str(i) for i in range(1000)]
    assert (holdout_mask(ids, 0.3) != holdout_mask(ids, 0.3, salt="other")).any()
    assert not holdout_mask(ids, 0.0).any()
    with pytest.raises(ValueError, match="holdout fraction"):
        holdout_mask(ids, 1.0)


def test_every_stage_splits_by_the_one_data_split_section() -> None:
    """``data.split`` owns the hold-out: its fraction and salt decide the rows, and the old
    per-stage fractions (evaluate's, the deploy replay's) are gone."""
    frame = pd.DataFrame({"id": [f"r{i}" for i in range(500)]})
    split = SplitConfig(holdout_fraction=0.3, salt="s2")
    train, held = split_frame(frame, split)
    assert held["id"].tolist() == split_holdout(frame, 0.3, salt="s2")[1]["id"].tolist()
    assert set(train["id"]).isdisjoint(held["id"]) and len(train) + len(held) == len(frame)
    default = load_config(None, []).data.split
    assert (default.holdout_fraction, default.salt) == (0.2, DEFAULT_SALT)
    assert split_frame(frame, default)[1].equals(split_holdout(frame, 0.2)[1])
    for old in ("evaluate.holdout_fraction=0.2", "deploy.replay.holdout_fraction=0.1"):
        with pytest.raises(ConfigError, match=f"unknown key '{old.split('=')[0]}'"):
            load_config(None, [old])


def test_the_canary_replays_the_rows_evaluate_held_out(tmp_path: Path) -> None:
    """The replay sends held-out rows of ``data.split`` only: rows train never saw."""
    from PIL import Image

    from pairflow.stages.deploy.replay import holdout_pairs

    ids = [f"r{i}" for i in range(60)]
    for i in ids:
        Image.new("RGB", (16, 16), (int(i[1:]) * 4, 0, 0)).save(tmp_path / f"{i}.png")
    frame = pd.DataFrame(
        {"id": ids, "image": [f"{i}.png" for i in ids], "caption": [f"a {i}" for i in ids]}
    )
    frame.to_parquet(tmp_path / "m.parquet")
    split = SplitConfig(holdout_fraction=0.3)
    _, held = split_frame(frame, split)
    pairs = holdout_pairs(tmp_path / "m.parquet", split, 8)
    assert {p["id"] for p in pairs} == set(held["id"])
