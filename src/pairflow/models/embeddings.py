"""Filter artifacts: embeddings + scores (Parquet), a score histogram, a Markdown summary.

Embeddings file (``embeddings.parquet``, format ``pairflow-clip-embeddings/1``): one row per
*scored* pair (rows whose image failed to read or decode are absent), in input order:

============  ==================================  ==========================================
column        Arrow type                          meaning
============  ==================================  ==========================================
id            string                              the manifest ``id``
clip_score    float32                             cosine(image_emb, text_emb), in [-1, 1]
image_emb     fixed_size_list<float16>[dim]       L2-normalised image embedding
text_emb      fixed_size_list<float16>[dim]       L2-normalised text embedding
============  ==================================  ==========================================

The Parquet schema metadata key ``pairflow.embeddings`` holds JSON: ``format``, ``dim``,
``dtype``, ``normalized``, ``model_ref``, ``model_digest``. Shard files concatenate as-is
(``pyarrow.concat_tables`` or a Parquet dataset over the folder) and join to manifests on
``id``; :func:`read_embeddings` returns numpy arrays for dedupe, drift and evaluation.
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pairflow.errors import InputDataError

EMBEDDINGS_FORMAT = "pairflow-clip-embeddings/1"
META_KEY = b"pairflow.embeddings"
QUANTILES: tuple[float, ...] = (0.05, 0.25, 0.5, 0.75, 0.95)


@dataclass
class Embeddings:
    """Embeddings of scored pairs: ids, float16 (n, dim) arrays, float32 scores, metadata."""

    ids: list[str]
    image: np.ndarray
    text: np.ndarray
    scores: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


def _fixed_list(matrix: np.ndarray) -> pa.FixedSizeListArray:
    flat = pa.array(np.ascontiguousarray(matrix, dtype=np.float16).reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, int(matrix.shape[1]))


def write_embeddings(
    path: str | Path,
    emb: Embeddings,
) -> Path:
    """Write ``emb`` as a Parquet embeddings file (see module docstring)."""
    n, dim = emb.image.shape
    if emb.text.shape != (n, dim) or emb.scores.shape != (n,) or len(emb.ids) != n:
        raise ValueError("embeddings: ids, image, text and scores must have matching lengths")
    meta = {
        "format": EMBEDDINGS_FORMAT,
        "dim": int(dim),
        "dtype": "float16",
        "normalized": True,
        **emb.meta,
    }
    schema = pa.schema(
        [
            ("id", pa.string()),
            ("clip_score", pa.float32()),
            ("image_emb", pa.list_(pa.float16(), int(dim))),
            ("text_emb", pa.list_(pa.float16(), int(dim))),
        ],
        metadata={META_KEY: json.dumps(meta, sort_keys=True).encode()},
    )
    table = pa.Table.from_arrays(
        [
            pa.array([str(i) for i in emb.ids], pa.string()),
            pa.array(emb.scores.astype(np.float32), pa.float32()),
            _fixed_list(emb.image),
            _fixed_list(emb.text),
        ],
        schema=schema,
    )
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    return out


def _matrix(column: pa.ChunkedArray, n: int, dim: int) -> np.ndarray:
    if n == 0:
        return np.zeros((0, dim), dtype=np.float16)
    values = column.combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=np.float16).reshape(n, dim)


def read_embeddings(path: str | Path) -> Embeddings:
    """Read an embeddings file written by :func:`write_embeddings`."""
    p = Path(path)
    try:
        table = pq.read_table(p)
    except (OSError, pa.ArrowException) as exc:
        raise InputDataError(f"{p}: unreadable embeddings file ({exc})") from exc
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise InputDataError(f"{p}: not a pairflow embeddings file (no {META_KEY.decode()})")
    meta = json.loads(raw)
    if meta.get("format") != EMBEDDINGS_FORMAT:
        raise InputDataError(f"{p}: unsupported embeddings format {meta.get('format')!r}")
    n, dim = table.num_rows, int(meta["dim"])
    return Embeddings(
        ids=[str(v) for v in table.column("id").to_pylist()],
        image=_matrix(table.column("image_emb"), n, dim),
        text=_matrix(table.column("text_emb"), n, dim),
        scores=table.column("clip_score").to_numpy().astype(np.float32),
        meta=meta,
    )


def score_quantiles(scores: np.ndarray) -> dict[str, float]:
    """p5/p25/p50/p75/p95 of the finite scores (empty when there are none)."""
    finite = scores[np.isfinite(scores)]
    if finite.size == 0:
        return {}
    values = np.quantile(finite.astype(np.float64), QUANTILES)
    return {
        f"p{round(q * 100)}": round(float(v), 4) for q, v in zip(QUANTILES, values, strict=True)
    }


def write_histogram(
    path: str | Path,
    scores: np.ndarray,
    kept: np.ndarray,
    *,
    cut: float | None,
    title: str = "CLIP score",
) -> Path:
    """Histogram of kept vs rejected scores with the cut marked.

    The format follows the suffix: ``.png``, ``.svg``, or ``.html`` (an inline SVG in a
    self-contained page, which the Kubeflow UI renders as an HTML artifact). A path without
    a suffix (a KFP artifact path) gets HTML.
    """
    # lazy: matplotlib (slow to import); only this path needs it
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    finite = np.isfinite(scores)
    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    ax = fig.add_subplot()
    values = scores[finite]
    lo = float(min(values.min(), cut if cut is not None else values.min())) if values.size else 0
    hi = float(max(values.max(), cut if cut is not None else values.max())) if values.size else 1
    bins = np.linspace(lo, hi if hi > lo else lo + 1e-3, 41)
    ax.hist(
        [scores[finite & kept], scores[finite & ~kept]],
        bins=bins.tolist(),
        stacked=True,
        color=["#2b8a3e", "#c92a2a"],
        label=[f"kept ({int((finite & kept).sum())})", f"rejected ({int((finite & ~kept).sum())})"],
    )
    if cut is not None:
        ax.axvline(cut, color="black", linestyle="--", linewidth=1, label=f"cut {cut:.3f}")
    ax.set_xlabel("cosine(image, text)")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    suffix = out.suffix.lower() or ".html"
    if suffix == ".html":
        buf = io.StringIO()
        fig.savefig(buf, format="svg")
        page = (
            "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title></head><body>\n{buf.getvalue()}\n</body></html>\n"
        )
        out.write_text(page)
    elif suffix in {".png", ".svg"}:
        fig.savefig(out, format=suffix[1:])
    else:
        raise ValueError(f"{out}: histogram path must end in .png, .svg or .html")
    return out


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def summary_markdown(
    *,
    rows_in: int,
    kept: int,
    rejected: Mapping[str, int],
    mode: str,
    cut: float | None,
    threshold: float,
    top_fraction: float,
    source_thresholds: Mapping[str, float],
    quantiles: Mapping[str, float],
    model_ref: str,
    model_digest: str,
    rows_per_s: float,
    roc_auc: float | None = None,
    extra: Sequence[tuple[str, object]] = (),
) -> str:
    """The Markdown summary shown in the Kubeflow UI (a ``Markdown`` artifact)."""
    if mode == "top_fraction":
        rule = f"keep top {top_fraction:.1%} by score (lowest kept: {_fmt(cut)})"
    else:
        rule = f"keep clip_score >= {threshold:.4f}"
        if source_thresholds:
            per = ", ".join(f"`{k}` >= {v:.4f}" for k, v in sorted(source_thresholds.items()))
            rule += f" (per source: {per})"
    lines = [
        "# CLIP filter",
        "",
        f"- model: `{model_ref}` (sha256 `{model_digest[:12]}`)",
        f"- rule: {rule}",
        f"- rows in: {rows_in}; kept: {kept}; rejected: {sum(rejected.values())}",
        f"- throughput: {rows_per_s:.1f} pairs/s",
    ]
    if roc_auc is not None:
        lines.append(f"- ROC-AUC vs ground-truth mismatched captions: {roc_auc:.4f}")
    lines += [f"- {k}: {_fmt(v)}" for k, v in extra]
    if rejected:
        lines += ["", "| rejected reason | rows |", "| --- | ---: |"]
        lines += [f"| {k} | {v} |" for k, v in sorted(rejected.items())]
    if quantiles:
        lines += ["", "| score quantile | value |", "| --- | ---: |"]
        lines += [f"| {k} | {v:.4f} |" for k, v in quantiles.items()]
    return "\n".join(lines) + "\n"
