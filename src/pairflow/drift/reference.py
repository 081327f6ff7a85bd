"""The drift reference: one row per training pair of this run, Parquet.

Columns: ``id``, ``caption_chars``, ``caption_tokens`` (whitespace words), ``width``,
``height`` (nullable), ``clip_score`` (nullable), ``label`` (nullable), and
``has_embedding`` (bool) with ``image_emb``/``text_emb`` as
``fixed_size_list<float16>[dim]`` (zeros where ``has_embedding`` is false; all three absent
without embeddings). Schema metadata ``pairflow.drift_reference`` holds JSON: ``format``, ``dim``,
``model_ref`` and ``model_digest`` of the CLIP model that produced the embeddings (drift on
embeddings only compares references made by the same model).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pairflow.errors import InputDataError
from pairflow.models.embeddings import Embeddings

REFERENCE_FORMAT = "pairflow-drift-reference/1"
META_KEY = b"pairflow.drift_reference"
METADATA_COLUMNS: tuple[str, ...] = (
    "caption_chars",
    "caption_tokens",
    "width",
    "height",
    "clip_score",
    "label",
)


@dataclass
class Reference:
    """Metadata frame (``id`` + :data:`METADATA_COLUMNS`) and optional float16 embeddings."""

    frame: pd.DataFrame
    image: np.ndarray | None = None
    text: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def has_embeddings(self) -> bool:
        return self.image is not None and self.text is not None and len(self.image) > 0


def _optional(df: pd.DataFrame, column: str, dtype: str) -> pd.Series:
    if column in df.columns:
        return pd.Series(df[column].to_numpy(), dtype=dtype)
    return pd.Series([None] * len(df), dtype=dtype)


def build_reference(rows: pd.DataFrame, embeddings: Embeddings | None) -> Reference:
    """Describe ``rows`` (a manifest) joined to ``embeddings`` on ``id`` (missing ids: null
    score; rows without embeddings are dropped from the embedding matrices only)."""
    captions = rows["caption"].astype(str)
    frame = pd.DataFrame(
        {
            "id": rows["id"].astype(str).to_numpy(),
            "caption_chars": captions.str.len().astype("int64").to_numpy(),
            "caption_tokens": np.array([len(c.split()) for c in captions], dtype=np.int64),
            "width": _optional(rows, "width", "Int64"),
            "height": _optional(rows, "height", "Int64"),
            "clip_score": pd.Series([np.nan] * len(rows), dtype="float32"),
            "label": _optional(rows, "label", "string"),
        }
    )
    if embeddings is None or not embeddings.ids:
        return Reference(frame)
    pos = pd.Series(np.arange(len(embeddings.ids)), index=pd.Index(embeddings.ids))
    pos = pos[~pos.index.duplicated()]
    found = pos.reindex(frame["id"]).to_numpy()
    has = ~np.isnan(found)
    idx = found[has].astype(np.int64)
    frame.loc[has, "clip_score"] = embeddings.scores[idx].astype(np.float32)
    meta = {k: embeddings.meta.get(k) for k in ("model_ref", "model_digest")}
    return Reference(
        frame,
        image=embeddings.image[idx].astype(np.float16),
        text=embeddings.text[idx].astype(np.float16),
        meta={**meta, "embedded_ids": int(has.sum())},
    )


def _fixed_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float16).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, int(matrix.shape[1]))


def write_reference(path: str | Path, ref: Reference) -> Path:
    """Write ``ref`` as Parquet; every row keeps its metadata, rows without an embedding
    get zero vectors and ``has_embedding`` false."""
    table = pa.Table.from_pandas(ref.frame, preserve_index=False)
    meta: dict[str, Any] = {"format": REFERENCE_FORMAT, **ref.meta}
    if ref.has_embeddings:
        assert ref.image is not None and ref.text is not None
        has = ref.frame["clip_score"].notna().to_numpy()
        dim = int(ref.image.shape[1])
        meta["dim"] = dim
        table = table.append_column("has_embedding", pa.array(has))
        for name, matrix in (("image_emb", ref.image), ("text_emb", ref.text)):
            full = np.zeros((len(has), dim), dtype=np.float16)
            full[has] = matrix
            table = table.append_column(
                pa.field(name, pa.list_(pa.float16(), dim)), _fixed_list(full)
            )
    schema_meta = dict(table.schema.metadata or {})
    schema_meta[META_KEY] = json.dumps(meta, sort_keys=True).encode()
    table = table.replace_schema_metadata(schema_meta)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    return out


def read_reference(path: str | Path) -> Reference:
    """Read a reference written by :func:`write_reference`."""
    p = Path(path)
    try:
        table = pq.read_table(p)
    except (OSError, pa.ArrowException) as exc:
        raise InputDataError(f"{p}: unreadable drift reference ({exc})") from exc
    raw = (table.schema.metadata or {}).get(META_KEY)
    meta = json.loads(raw) if raw else {}
    if meta.get("format") != REFERENCE_FORMAT:
        raise InputDataError(f"{p}: not a pairflow drift reference ({meta.get('format')!r})")
    cols = ["id", *METADATA_COLUMNS]
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise InputDataError(f"{p}: drift reference lacks columns {missing}")
    frame = table.select(cols).to_pandas()
    if "image_emb" not in table.column_names:
        return Reference(frame, meta=meta)
    dim = int(meta["dim"])
    has = np.asarray(table.column("has_embedding").to_pylist(), dtype=bool)
    mats = []
    for name in ("image_emb", "text_emb"):
        col = table.column(name).combine_chunks()
        values = np.asarray(col.values.to_numpy(zero_copy_only=False), dtype=np.float16)
        mats.append(values.reshape(len(col), dim)[has])
    return Reference(frame, image=mats[0], text=mats[1], meta=meta)
