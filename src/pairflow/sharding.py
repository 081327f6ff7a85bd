"""Stable assignment of rows to shards by a hash of ``id`` (same answer on every machine)."""

from __future__ import annotations

import hashlib

import pandas as pd


def shard_of(row_id: str, num_shards: int) -> int:
    """The shard of ``row_id``: first 8 bytes of sha1, modulo ``num_shards``."""
    digest = hashlib.sha1(row_id.encode("utf-8"), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big") % num_shards


def select_shard(df: pd.DataFrame, shard: int, num_shards: int) -> pd.DataFrame:
    """Rows of ``df`` that belong to ``shard`` (order preserved)."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} out of range for {num_shards} shards")
    mask = df["id"].map(lambda i: shard_of(str(i), num_shards) == shard)
    return df[mask.astype(bool)].reset_index(drop=True)
