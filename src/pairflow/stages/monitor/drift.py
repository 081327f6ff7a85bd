"""Judge one window of served traffic against the champion's serving reference.

The window's records (:mod:`pairflow.serve.requestlog.records`) become a
:class:`~pairflow.drift.reference.Reference` and go through the evaluate step's own
comparison (:func:`pairflow.drift.compare.compare`): Evidently's ``DataDriftPreset`` on
``caption_chars``, ``caption_tokens``, ``width``, ``height`` and the pair score (the
window's ``score`` against the reference's ``clip_score``, which in a serving reference is
the same model's own cosine), and the domain-classifier test (ROC AUC) on each tower's
embeddings. Thresholds: ``monitor.drift_share`` and ``monitor.embedding_auc``; each numeric
column by a KS test at evaluate's default p-value cut (see :func:`drift_tests`).

Only pairs count: rows of the champion's version with both embeddings and a score. Caption
lengths are recomputed from the logged caption exactly as the reference computed them
(characters; whitespace-separated words), so the two sides never differ by definition. The
served ``label`` is a prediction, not ground truth, so it is not compared.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from pairflow.config import EvaluateConfig
from pairflow.drift.compare import DriftTests, compare
from pairflow.drift.reference import Reference
from pairflow.errors import InputDataError
from pairflow.stages.monitor.reference import ChampionReference
from pairflow.stages.monitor.settings import MonitorConfig
from pairflow.stages.monitor.verdict import WindowId, WindowVerdict

REQUIRED = ("request_id", "instance", "model_version", "caption", "width", "height", "score")


def drift_tests(cfg: MonitorConfig) -> DriftTests:
    """The monitor's two limits; numeric columns by KS at evaluate's p-value cut.

    Evaluate compares whole datasets with a normed Wasserstein distance cut (0.1), robust on
    thousands of rows. A window holds a few hundred pairs, where that cut flags sampling
    noise (measured by ``bench/monitor_drift_accuracy.py``: 30% false alarms on
    same-distribution windows of 200 pairs), so the monitor uses KS, Evidently's own
    choice for samples under 1000 rows, whose p-value accounts for the window's size.
    """
    base = replace(DriftTests.of(EvaluateConfig()), numeric_method="ks")
    return base.with_limits(cfg.drift_share, cfg.embedding_auc)


def _matrix(column: pa.ChunkedArray, keep: np.ndarray, dim: int) -> np.ndarray:
    arr = column.combine_chunks()
    values = np.asarray(arr.flatten().to_numpy(zero_copy_only=False), dtype=np.float16)
    out: np.ndarray = values.reshape(len(arr), dim)[keep]
    return out


def window_reference(records: pa.Table, champion: ChampionReference) -> tuple[Reference, str]:
    """The window's usable pairs as a Reference, and a note on the rows left out."""
    missing = [c for c in (*REQUIRED, "image_emb", "text_emb") if c not in records.column_names]
    if missing:
        raise InputDataError(f"monitor window: records lack columns {missing}")
    emb_type = records.schema.field("image_emb").type
    if not isinstance(emb_type, pa.FixedSizeListType):
        raise InputDataError(f"monitor window: image_emb is {emb_type}, not a fixed-size list")
    dim = int(emb_type.list_size)
    ref_dim = champion.reference.meta.get("dim")
    if ref_dim is not None and int(ref_dim) != dim:
        raise InputDataError(
            f"monitor window: embeddings are {dim}-d, the champion v{champion.version}'s "
            f"reference is {ref_dim}-d"
        )
    version = np.asarray(records.column("model_version").to_pylist(), dtype=object)
    ours = version == champion.version
    paired = (
        records.column("image_emb").is_valid().to_numpy(zero_copy_only=False)
        & records.column("text_emb").is_valid().to_numpy(zero_copy_only=False)
        & records.column("score").is_valid().to_numpy(zero_copy_only=False)
        & records.column("caption").is_valid().to_numpy(zero_copy_only=False)
    )
    keep = ours & paired
    notes = []
    if (~ours).any():
        others = sorted({str(v) for v in version[~ours]})
        notes.append(f"{int((~ours).sum())} rows of other versions {others} left out")
    if (ours & ~paired).any():
        notes.append(f"{int((ours & ~paired).sum())} rows without a scored pair left out")
    table = records.filter(pa.array(keep))
    captions = pd.Series(table.column("caption").to_pylist(), dtype="object").astype(str)
    frame = pd.DataFrame(
        {
            "id": [f"{r}#{i}" for r, i in zip(table["request_id"], table["instance"], strict=True)],
            "caption_chars": captions.str.len().astype("int64").to_numpy(),
            "caption_tokens": np.array([len(c.split()) for c in captions], dtype=np.int64),
            "width": pd.array(table.column("width").to_pylist(), dtype="Int64"),
            "height": pd.array(table.column("height").to_pylist(), dtype="Int64"),
            "clip_score": table.column("score").to_numpy().astype(np.float32),
            "label": pd.array([None] * table.num_rows, dtype="string"),
        }
    )
    meta = {
        "model_digest": champion.reference.meta.get("model_digest"),
        "model_version": champion.version,
        "dim": dim,
    }
    ref = Reference(
        frame,
        image=_matrix(records.column("image_emb"), keep, dim),
        text=_matrix(records.column("text_emb"), keep, dim),
        meta=meta,
    )
    return ref, "; ".join(notes)


def judge_window(
    records: pa.Table,
    champion: ChampionReference,
    cfg: MonitorConfig,
    window: WindowId,
    html_path: Path,
) -> WindowVerdict:
    """Compare the window's pairs with the champion's reference; write the HTML report."""
    current, note = window_reference(records, champion)
    reference = champion.reference
    ref_scores = reference.frame["clip_score"].dropna().to_numpy(dtype=np.float64)
    verdict = WindowVerdict(
        window=window,
        rows=len(current.frame),
        reference_rows=len(reference.frame),
        judged=False,
        report_html=str(html_path),
        reasons=[note] if note else [],
    )
    if verdict.rows < cfg.min_window_rows:
        reason = (
            f"window too small: {verdict.rows} pairs of v{champion.version} "
            f"< monitor.min_window_rows {cfg.min_window_rows}; not judged"
        )
        compare(None, current, drift_tests(cfg), html_path, missing_reason=reason)
        verdict.reasons.insert(0, reason)
        return verdict
    outcome = compare(reference, current, drift_tests(cfg), html_path)
    verdict.reasons += outcome.reasons
    if outcome.detected is None:
        return verdict
    metrics = outcome.metrics
    verdict.judged = True
    verdict.drift = bool(outcome.detected)
    verdict.drift_share = float(metrics.get("drifted_share", 0.0))
    verdict.drifted_columns = [
        "score" if c == "clip_score" else str(c) for c in metrics.get("drifted_columns", [])
    ]
    verdict.embedding_auc = {
        tower: float(metrics[f"embedding_auc.{tower}"])
        for tower in ("image", "text")
        if f"embedding_auc.{tower}" in metrics
    }
    window_mean = float(current.frame["clip_score"].astype("float64").mean())
    verdict.score_mean = window_mean
    if len(ref_scores):
        verdict.reference_score_mean = float(ref_scores.mean())
        verdict.score_drop = verdict.reference_score_mean - window_mean
        verdict.score_dropped = verdict.score_drop > cfg.score_drop_margin
        verdict.reasons.append(
            f"mean pair score {window_mean:.4f} vs reference {verdict.reference_score_mean:.4f}: "
            f"drop {verdict.score_drop:+.4f} {'>' if verdict.score_dropped else '<='} "
            f"monitor.score_drop_margin {cfg.score_drop_margin:.4f}"
        )
    return verdict
