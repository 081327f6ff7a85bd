"""The held-out split is stable, sized as configured and disjoint from the training rows."""

from __future__ import annotations

import pandas as pd
import pytest

from pairflow.data.split import holdout_mask, split_holdout


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
