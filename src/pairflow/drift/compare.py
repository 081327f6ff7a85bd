"""Drift between the champion's training data and this run's, as an Evidently 0.7 report.

Metadata columns (caption length, image size, CLIP score, label) go through
``DataDriftPreset`` (per-column tests; drift when the share of drifted columns reaches
``evaluate.drift_share``). Image and text embeddings get a domain-classifier test (the
method of Evidently's ``EmbeddingsDrift``, done here with scikit-learn because Evidently's
own took minutes on 64-d embeddings): a logistic regression learns to tell reference from
new embeddings on half the rows; its ROC AUC on the other half above
``evaluate.embedding_drift_auc`` is drift. Embeddings are compared only when both sides were
embedded by the same CLIP model (same digest). Its results are appended to the HTML.

The same comparison judges a window of served traffic (``pairflow.stages.monitor.drift``): its
thresholds come in as :class:`DriftTests`, built from either config section.
"""

from __future__ import annotations

import html as html_mod
import importlib
import logging
import time
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairflow.config import EvaluateConfig
from pairflow.drift.reference import METADATA_COLUMNS, Reference

log = logging.getLogger("pairflow.drift.compare")

NUMERIC = ("caption_chars", "caption_tokens", "width", "height", "clip_score")
CATEGORICAL = ("label",)
_MIN_ROWS = 10


@dataclass(frozen=True)
class DriftTests:
    """Thresholds of one drift comparison (evaluate's or the monitor's)."""

    drift_share: float
    column_p: float
    numeric_method: str
    numeric_distance: float
    embedding_auc: float
    max_rows: int
    seed: int

    @classmethod
    def of(cls, cfg: EvaluateConfig) -> DriftTests:
        return cls(
            drift_share=cfg.drift_share,
            column_p=cfg.drift_column_p,
            numeric_method=cfg.drift_numeric_method,
            numeric_distance=cfg.drift_numeric_distance,
            embedding_auc=cfg.embedding_drift_auc,
            max_rows=cfg.max_drift_rows,
            seed=cfg.seed,
        )

    def with_limits(self, drift_share: float, embedding_auc: float) -> DriftTests:
        return replace(self, drift_share=drift_share, embedding_auc=embedding_auc)


@dataclass
class _Side:
    frame: pd.DataFrame
    emb: dict[str, np.ndarray]


def _usable_columns(ref: pd.DataFrame, cur: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Metadata columns with values on both sides and some variation somewhere."""
    num: list[str] = []
    cat: list[str] = []
    for col in METADATA_COLUMNS:
        a, b = ref[col].dropna(), cur[col].dropna()
        if len(a) < _MIN_ROWS or len(b) < _MIN_ROWS:
            continue
        if pd.concat([a, b]).nunique() < 2:
            continue
        (num if col in NUMERIC else cat).append(col)
    return num, cat


def _sample(ref: Reference, n: int, rng: np.random.Generator, with_emb: bool) -> _Side:
    """Up to ``n`` rows; with embeddings, only rows that have them (rows stay aligned)."""
    rows = np.arange(len(ref.frame))
    emb_row = np.full(len(rows), -1)
    if with_emb and ref.image is not None:
        has = ref.frame["clip_score"].notna().to_numpy()
        emb_row[has] = np.arange(int(has.sum()))
        rows = rows[has]
    take = np.sort(rng.choice(rows, size=n, replace=False)) if len(rows) > n else rows
    frame = ref.frame.iloc[take].reset_index(drop=True)
    emb: dict[str, np.ndarray] = {}
    if with_emb and ref.image is not None and ref.text is not None:
        emb = {"image": ref.image[emb_row[take]], "text": ref.text[emb_row[take]]}
    return _Side(frame, emb)


def compare(
    reference: Reference | None,
    current: Reference,
    config: EvaluateConfig | DriftTests,
    html_path: str | Path,
    *,
    missing_reason: str = "",
) -> DriftOutcome:
    """Run the drift report, write its HTML to ``html_path`` and summarise the outcome.

    Without a reference (first run, or a champion without one) the HTML says why and the
    outcome is ``detected=None``.
    """
    cfg = config if isinstance(config, DriftTests) else DriftTests.of(config)
    html = Path(html_path)
    html.parent.mkdir(parents=True, exist_ok=True)
    if reference is None:
        reason = missing_reason or "no reference data"
        _placeholder(html, reason)
        return DriftOutcome(None, [reason], {"skipped": True})
    start = time.perf_counter()
    rng = np.random.default_rng(cfg.seed)
    same_model = (
        reference.has_embeddings
        and current.has_embeddings
        and reference.meta.get("model_digest") is not None
        and reference.meta.get("model_digest") == current.meta.get("model_digest")
    )
    reasons: list[str] = []
    if not same_model:
        reasons.append(_embedding_skip_reason(reference, current))
    ref = _sample(reference, cfg.max_rows, rng, same_model)
    cur = _sample(current, cfg.max_rows, rng, same_model)
    num, cat = _usable_columns(ref.frame, cur.frame)
    use_emb = same_model and all(
        len(ref.emb[k]) >= _MIN_ROWS and len(cur.emb[k]) >= _MIN_ROWS for k in ("image", "text")
    )
    if same_model and not use_emb:
        reasons.append(f"embedding drift skipped: fewer than {_MIN_ROWS} embedded rows a side")
    if not num and not cat and not use_emb:
        reason = (
            f"drift skipped: fewer than {_MIN_ROWS} rows with varying values on a side "
            f"(reference {len(ref.frame)}, new {len(cur.frame)})"
        )
        _placeholder(html, reason)
        return DriftOutcome(None, [reason, *reasons], {"skipped": True})
    metrics = _run_report(ref, cur, num, cat, use_emb, cfg, html)
    detected = False
    share = float(metrics.get("drifted_share", 0.0))
    drifted = metrics.get("drifted_columns", [])
    if num or cat:
        hit = share >= cfg.drift_share
        detected |= hit
        reasons.append(
            f"metadata: {len(drifted)}/{len(num) + len(cat)} columns drifted "
            f"({', '.join(drifted) or 'none'}; share {share:.2f} "
            f"{'>=' if hit else '<'} {cfg.drift_share:.2f})"
        )
    for name in ("image", "text") if use_emb else ():
        auc = float(metrics[f"embedding_auc.{name}"])
        hit = auc > cfg.embedding_auc
        detected |= hit
        reasons.append(
            f"{name} embeddings: classifier ROC AUC {auc:.3f} "
            f"{'>' if hit else '<='} {cfg.embedding_auc:.3f}"
        )
    metrics.update(
        skipped=False,
        detected=detected,
        reference_rows=len(ref.frame),
        current_rows=len(cur.frame),
        seconds=round(time.perf_counter() - start, 3),
    )
    return DriftOutcome(detected, reasons, metrics)


def _embedding_skip_reason(reference: Reference, current: Reference) -> str:
    if not reference.has_embeddings:
        return "embedding drift skipped: the champion's reference has no embeddings"
    if not current.has_embeddings:
        return "embedding drift skipped: no embeddings for this run's data"
    return (
        "embedding drift skipped: embeddings come from different CLIP models "
        f"({reference.meta.get('model_digest')} vs {current.meta.get('model_digest')})"
    )


def embedding_auc(reference: np.ndarray, current: np.ndarray, seed: int) -> float:
    """Held-out ROC AUC of a logistic regression telling ``current`` rows from ``reference``.

    0.5 = indistinguishable. Each side is split in half (stratified); fit on one half,
    scored on the other.
    """
    # lazy: sklearn (slow to import); only this path needs it
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    x = np.concatenate([reference, current]).astype(np.float32)
    y = np.concatenate([np.zeros(len(reference)), np.ones(len(current))])
    x_fit, x_test, y_fit, y_test = train_test_split(
        x, y, test_size=0.5, stratify=y, random_state=seed
    )
    model = LogisticRegression(max_iter=1000).fit(x_fit, y_fit)
    return float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1]))


def _run_report(
    ref: _Side,
    cur: _Side,
    num: list[str],
    cat: list[str],
    use_emb: bool,
    cfg: DriftTests,
    html: Path,
) -> dict[str, Any]:
    metrics: dict[str, Any] = {"column_p_values": {}, "drifted_columns": []}
    if num or cat:
        metrics = _evidently_report(ref.frame, cur.frame, num, cat, cfg, html)
    else:
        _placeholder(html, "no metadata column to compare", title="Drift report")
    if use_emb:
        rows = []
        for name in ("image", "text"):
            auc = embedding_auc(ref.emb[name], cur.emb[name], cfg.seed)
            metrics[f"embedding_auc.{name}"] = auc
            rows.append((name, auc))
        _append_html(html, rows, cfg.embedding_auc)
    return metrics


def _evidently_report(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    num: list[str],
    cat: list[str],
    cfg: DriftTests,
    html: Path,
) -> dict[str, Any]:
    # imported by name: evidently ships no type information
    evidently: Any = importlib.import_module("evidently")
    presets: Any = importlib.import_module("evidently.presets")

    def frame(df: pd.DataFrame) -> pd.DataFrame:
        out = df[num + cat].copy()
        for col in num:
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
        for col in cat:
            out[col] = out[col].astype("object")
        return out.reset_index(drop=True)

    definition = evidently.DataDefinition(numerical_columns=num, categorical_columns=cat)
    report = evidently.Report(
        [
            presets.DataDriftPreset(
                columns=num + cat,
                drift_share=cfg.drift_share,
                num_method=cfg.numeric_method,
                num_threshold=_numeric_cut(cfg),
                cat_threshold=cfg.column_p,
            )
        ]
    )
    with warnings.catch_warnings():
        # Evidently's correlation widgets divide by a column's std: a constant column (e.g.
        # all images one size) warns, and its drift test is unaffected
        warnings.filterwarnings("ignore", "invalid value encountered", RuntimeWarning)
        snapshot = report.run(
            evidently.Dataset.from_pandas(frame(cur), data_definition=definition),
            evidently.Dataset.from_pandas(frame(ref), data_definition=definition),
        )
        snapshot.save_html(str(html))
    summary: dict[str, Any] = snapshot.dict()
    return _summarise(summary, cfg, set(num))


def _append_html(html: Path, rows: list[tuple[str, float]], threshold: float) -> None:
    cells = "".join(
        f"<tr><td>{name}</td><td>{auc:.3f}</td><td>{'drift' if auc > threshold else 'ok'}</td></tr>"
        for name, auc in rows
    )
    block = (
        "<section style='font-family:sans-serif;margin:1em'><h2>Embedding drift</h2>"
        f"<p>Domain-classifier ROC AUC (drift above {threshold:.3f})</p>"
        f"<table border='1' cellpadding='4'><tr><th>embeddings</th><th>ROC AUC</th>"
        f"<th>verdict</th></tr>{cells}</table></section>"
    )
    text = html.read_text()
    idx = text.lower().rfind("</body>")
    html.write_text(text[:idx] + block + text[idx:] if idx >= 0 else text + block)


def _numeric_cut(cfg: DriftTests) -> float:
    """Numeric columns: a distance cut (Wasserstein) or a p-value cut (KS)."""
    if cfg.numeric_method == "wasserstein":
        return cfg.numeric_distance
    return cfg.column_p


def _summarise(snapshot: dict[str, Any], cfg: DriftTests, numeric: set[str]) -> dict[str, Any]:
    """Drift per column: p-values (categorical, KS) or normed distances (Wasserstein)."""
    out: dict[str, Any] = {"column_p_values": {}, "column_distances": {}, "drifted_columns": []}
    for m in snapshot.get("metrics", []):
        conf = m.get("config", {})
        kind = str(conf.get("type", ""))
        value = m.get("value")
        if kind.endswith(":DriftedColumnsCount") and isinstance(value, dict):
            out["drifted_share"] = float(value.get("share", 0.0))
            out["drifted_count"] = float(value.get("count", 0.0))
        elif kind.endswith(":ValueDrift"):
            col = str(conf.get("column"))
            v = float(value) if value is not None else float("nan")
            if col in numeric and cfg.numeric_method == "wasserstein":
                out["column_distances"][col] = v
                drifted = v >= _numeric_cut(cfg)
            else:
                out["column_p_values"][col] = v
                drifted = v < cfg.column_p
            if drifted:
                out["drifted_columns"].append(col)
    return out


def _placeholder(html: Path, reason: str, title: str = "Drift report skipped") -> None:

    html.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>drift</title></head><body>"
        f"<h2>{title}</h2><p>{html_mod.escape(reason)}</p></body></html>\n"
    )


@dataclass
class DriftOutcome:
    """What the drift check found (``detected`` None: skipped, see ``reasons``)."""

    detected: bool | None
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
