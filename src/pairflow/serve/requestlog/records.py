"""The logged-traffic record: one row per served instance (image-caption pair), Parquet.

This is the contract between the request logger (predictor + ``pairflow monitor-sink``) and
the drift monitor. The sink writes parts under ``<monitor.log_prefix>/dt=YYYY-MM-DD/hour=HH/``;
image bytes (``monitor.store_images``) go to ``<log_prefix>/images/<sha256>.<ext>`` and
``image_uri`` points there (empty when not stored).

Embeddings are the serving model's own (fp16, L2-normalised, as the predictor computed them),
so a window is compared like-for-like with a reference embedded by the same model version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

RECORD_FORMAT = "pairflow-request-log/1"
META_KEY = b"pairflow.request_log"

SCALAR_FIELDS: tuple[pa.Field, ...] = (
    pa.field("request_id", pa.string(), nullable=False),
    pa.field("instance", pa.int32(), nullable=False),
    pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("model_name", pa.string(), nullable=False),
    pa.field("model_version", pa.string(), nullable=False),
    pa.field("task", pa.string(), nullable=False),  # score | embed | classify
    pa.field("image_sha256", pa.string()),
    pa.field("image_bytes", pa.int64()),
    pa.field("image_format", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("image_uri", pa.string()),
    pa.field("caption", pa.string()),
    pa.field("caption_chars", pa.int32()),
    pa.field("caption_tokens", pa.int32()),
    pa.field("score", pa.float32()),  # cosine of the pair (null without both towers)
    pa.field("label", pa.string()),  # predicted label (classify), else null
)


def schema(dim: int) -> pa.Schema:
    """The record schema with ``dim``-wide fp16 embeddings (null where a tower did not run)."""
    emb = pa.list_(pa.float16(), dim)
    return pa.schema(
        [*SCALAR_FIELDS, pa.field("image_emb", emb), pa.field("text_emb", emb)],
        metadata={META_KEY: f'{{"format": "{RECORD_FORMAT}", "dim": {dim}}}'.encode()},
    )


def to_table(rows: Iterable[Mapping[str, Any]], dim: int) -> pa.Table:
    """Build a record table from dicts keyed by field name (embeddings as float arrays)."""
    sch = schema(dim)
    rows = list(rows)
    cols: dict[str, list[Any]] = {f.name: [] for f in sch}
    for row in rows:
        for name in cols:
            value = row.get(name)
            if name in ("image_emb", "text_emb") and value is not None:
                value = np.asarray(value, dtype=np.float16)
                if value.shape != (dim,):
                    raise ValueError(f"{name}: expected {dim} values, got shape {value.shape}")
            cols[name].append(value)
    arrays: list[pa.Array] = []
    for f in sch:
        if f.name in ("image_emb", "text_emb"):
            arrays.append(_embeddings(cols[f.name], dim))
        else:
            arrays.append(pa.array(cols[f.name], type=f.type))
    return pa.Table.from_arrays(arrays, schema=sch)


def _embeddings(values: list[np.ndarray | None], dim: int) -> pa.Array:
    mask = np.array([v is None for v in values], dtype=bool)
    flat = np.zeros((len(values), dim), dtype=np.float16)
    for i, v in enumerate(values):
        if v is not None:
            flat[i] = v
    inner = pa.array(flat.reshape(-1))
    arr = pa.FixedSizeListArray.from_arrays(inner, dim)
    if mask.any():
        arr = pa.FixedSizeListArray.from_arrays(inner, dim, mask=pa.array(mask))
    return arr
