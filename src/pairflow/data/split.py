"""The held-out split: chosen by a hash of ``id``, so it is stable across runs and shards.

Train never sees a held-out row; evaluate and compress measure on exactly these rows, register
records them as the evaluation dataset and the deploy canary replays them. The fraction and the
salt are the ``data.split`` section (:class:`pairflow.data.settings.SplitConfig`); every stage
splits through :func:`split_frame` with it. The salt lets a team re-draw the split deliberately
(changing it invalidates comparisons with champions evaluated on the old split).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd

from pairflow.data.settings import DEFAULT_SALT, SplitConfig

__all__ = ["DEFAULT_SALT", "holdout_bucket", "holdout_mask", "split_frame", "split_holdout"]


def holdout_bucket(row_id: str, salt: str = DEFAULT_SALT) -> float:
    """A number in [0, 1) fixed by ``row_id`` and ``salt`` (first 8 bytes of sha256)."""
    digest = hashlib.sha256(f"{salt}\0{row_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def holdout_mask(
    ids: pd.Series | list[str], fraction: float, salt: str = DEFAULT_SALT
) -> np.ndarray:
    """Boolean mask: True where the row belongs to the held-out split."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1), got {fraction}")
    return np.fromiter(
        (holdout_bucket(str(i), salt) < fraction for i in ids), dtype=bool, count=len(ids)
    )


def split_holdout(
    frame: pd.DataFrame, fraction: float, salt: str = DEFAULT_SALT
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows, held-out rows) of a manifest, each keeping the input order."""
    mask = holdout_mask(frame["id"], fraction, salt)
    return (
        frame.loc[~mask].reset_index(drop=True),
        frame.loc[mask].reset_index(drop=True),
    )


def split_frame(frame: pd.DataFrame, split: SplitConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows, held-out rows) of a manifest under the run's ``data.split`` section."""
    return split_holdout(frame, split.holdout_fraction, split.salt)
