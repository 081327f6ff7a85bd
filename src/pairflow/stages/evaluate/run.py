"""Evaluate a candidate on the held-out rows, against the champion, and decide the gate."""

from __future__ import annotations

import logging
import math
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pairflow.config import PairflowConfig
from pairflow.data.split import split_frame
from pairflow.drift.compare import DriftOutcome, compare
from pairflow.drift.reference import Reference, build_reference, read_reference, write_reference
from pairflow.errors import InputDataError
from pairflow.metrics import EvaluateMetrics
from pairflow.models.clip import LoadedClip
from pairflow.models.embeddings import Embeddings
from pairflow.models.errors import ModelLoadError
from pairflow.models.formats import META_FILE
from pairflow.models.open import open_model
from pairflow.models.scoring import score_frame
from pairflow.registry import champion as champ
from pairflow.stages.evaluate.bootstrap import DeltaCI, paired_bootstrap
from pairflow.stages.evaluate.classification import classification_metrics
from pairflow.stages.evaluate.finite import nonfinite_outputs
from pairflow.stages.evaluate.gate import (
    Chance,
    GateDecision,
    accuracy_chance,
    decide,
    recall_chance,
)
from pairflow.stages.evaluate.kinds import load_champion, with_kind_check
from pairflow.stages.evaluate.retrieval import clip_retrieval_metrics, zero_shot_predictions
from pairflow.stages.evaluate.scoring import HoldoutScores, common_rows, score_holdout
from pairflow.stages.evaluate.serving_reference import build_serving_reference

log = logging.getLogger("pairflow.stages.evaluate")

REQUIRED_COLUMNS = ("id", "image", "caption")
Progress = Callable[[str], None]


@dataclass
class ModelMetrics:
    """Scalars, per-query vectors (for the bootstrap) and a confusion matrix of one model."""

    scalars: dict[str, float]
    per_query: dict[str, np.ndarray]
    confusion: np.ndarray | None
    confusion_source: str


@dataclass
class Candidate:
    kind: str
    clip: LoadedClip
    classifier: Any | None
    labels: list[str]


@dataclass
class EvaluateResult:
    kind: str
    rows: int
    train_rows: int
    holdout_rows: int
    evaluated_rows: int
    class_names: list[str]
    candidate: ModelMetrics
    champion: ModelMetrics | None
    champion_info: champ.Champion | None
    comparisons: list[DeltaCI]
    drift: DriftOutcome
    gate: GateDecision
    model_ref: str
    model_digest: str
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def report_metrics(self) -> dict[str, Any]:
        """The stage report's ``metrics``: :class:`EvaluateMetrics` as JSON (NaN written as
        null)."""
        champion: dict[str, Any] | None = None
        if self.champion_info is not None and self.champion is not None:
            champion = {
                "uri": self.champion_info.uri,
                "version": self.champion_info.version,
                "run_id": self.champion_info.run_id,
                "metrics": self.champion.scalars,
            }
        cleaned: dict[str, Any] = _clean(
            {  # numpy values and NaN cleaned first: the model holds JSON numbers
                "kind": self.kind,
                "train_rows": self.train_rows,
                "holdout_rows": self.holdout_rows,
                "evaluated_rows": self.evaluated_rows,
                "classes": self.class_names,
                "candidate": self.candidate.scalars,
                "champion": champion,
                "deltas": {c.metric: c.to_dict() for c in self.comparisons},
                "gate": self.gate.to_dict(),
                "drift": {**self.drift.metrics, "reasons": self.drift.reasons},
                "model_ref": self.model_ref,
                "model_digest": self.model_digest,
                **self.extra,
            }
        )
        return EvaluateMetrics.model_validate(cleaned).to_json()


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        return _clean(value.item())
    return value


def load_candidate(ref: str, kind_hint: str, tracking_uri: str | None = None) -> Candidate:
    """A pairflow trained artifact (``pairflow_model.json``) or a plain CLIP directory (its
    Hugging Face directory: ``open_model(ref, variant="torch")``)."""
    opened = open_model(ref, variant="torch", device=None, tracking_uri=tracking_uri)
    trained = opened.trained
    if trained is None:
        if opened.path is None:
            raise ModelLoadError(
                f"{ref}: a trained model must be a directory, S3 or MLflow artifact"
            )
        if not Path(ref).is_dir():  # a remote candidate is a trained artifact
            raise ModelLoadError(f"{ref}: no {META_FILE} (not a pairflow trained model)")
        return Candidate("clip", opened.clip, None, [])
    classifier = trained if trained.kind == "classifier" else None
    return Candidate(trained.kind, trained.clip, classifier, list(trained.labels or []))


def _label_index(labels: pd.Series, class_names: list[str]) -> np.ndarray:
    lookup = {name: i for i, name in enumerate(class_names)}
    return np.array([lookup.get(str(v), -1) if pd.notna(v) else -1 for v in labels], dtype=np.int64)


def model_metrics(
    scores: HoldoutScores,
    rows: np.ndarray,
    labels: np.ndarray,
    class_names: list[str],
    ks: list[int],
) -> ModelMetrics:
    """All metrics of one model over held-out rows ``rows`` (labels: class index or -1)."""
    scalars, per_query = clip_retrieval_metrics(scores.image[rows], scores.text[rows], ks)
    y = labels[rows]
    labeled = y >= 0
    confusion: np.ndarray | None = None
    source = ""
    if labeled.any() and len(class_names) >= 2:
        preds = zero_shot_predictions(scores.image[rows][labeled], scores.prompts)
        zs, confusion, correct = classification_metrics(
            y[labeled], preds, class_names, prefix="zero_shot_"
        )
        scalars.update(zs)
        per_query["zero_shot_accuracy"] = correct
        source = "zero_shot"
    if scores.logits is not None and labeled.any():
        logits = scores.logits[rows][labeled].astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        cl, confusion, correct = classification_metrics(
            y[labeled], probs.argmax(axis=1), class_names, probs
        )
        scalars.update(cl)
        per_query["accuracy"] = correct
        source = "classifier"
    return ModelMetrics(scalars, per_query, confusion, source)


def _embeddings_for(
    rows: pd.DataFrame, embeddings: Embeddings | None, cfg: PairflowConfig
) -> tuple[Embeddings | None, str]:
    """This run's filter embeddings, else computed with ``clip_filter.model`` when set."""
    if embeddings is not None and embeddings.ids:
        return embeddings, "clip-filter embeddings"
    if not cfg.clip_filter.model:
        return None, "no embeddings input and clip_filter.model is empty: none computed"

    loaded = open_model(cfg.clip_filter.model, variant="torch", s3=cfg.data.s3, device=None).clip
    res = score_frame(rows.reset_index(drop=True), loaded, cfg.clip_filter, cfg.data.s3)
    idx = np.flatnonzero(res.scored)
    emb = Embeddings(
        ids=[str(v) for v in rows["id"].iloc[idx]],
        image=res.image_emb[idx],
        text=res.text_emb[idx],
        scores=res.scores[idx],
        meta={"model_ref": loaded.ref, "model_digest": loaded.digest},
    )
    return emb, f"computed with {cfg.clip_filter.model}"


def evaluate_frame(
    df: pd.DataFrame,
    model_ref: str,
    cfg: PairflowConfig,
    *,
    drift_html: Path,
    reference_out: Path,
    embeddings: Embeddings | None = None,
    progress: Progress | None = None,
    champion: str | None = None,
    serving_reference_out: Path | None = None,
) -> EvaluateResult:
    """Measure ``model_ref`` (and the champion) on the held-out rows of ``df``; gate it.

    ``champion`` overrides the MLflow lookup of ``models:/<register.model_name>@champion``
    (see :func:`pairflow.registry.champion.resolve_champion`). ``serving_reference_out``:
    where to write the candidate's serving reference (the drift monitor's baseline, see
    :mod:`pairflow.stages.evaluate.serving_reference`).
    """
    start = time.perf_counter()
    ev = cfg.evaluate
    say = progress or (lambda msg: log.info("evaluate: %s", msg))
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputDataError(f"evaluate input manifest: missing columns {missing}")
    train_rows, holdout = split_frame(df, cfg.data.split)
    if len(holdout) < 2:
        raise InputDataError(
            f"evaluate: the held-out split has {len(holdout)} of {len(df)} rows (need >= 2); "
            "raise data.split.holdout_fraction or give more rows"
        )
    tracking_uri = cfg.mlflow.tracking_uri
    say(f"loading candidate {model_ref}")
    cand = load_candidate(model_ref, cfg.train.model, tracking_uri)
    labels_present = sorted({str(v) for v in df.get("label", pd.Series(dtype=str)).dropna()})
    class_names = cand.labels or labels_present
    prompts = [ev.prompt_template.format(label=name) for name in class_names]
    say(f"scoring {len(holdout)} held-out rows with the candidate")
    cand_scores = score_holdout(
        cand.clip,
        holdout,
        prompts,
        classifier=cand.classifier,
        batch_size=ev.batch_size,
        s3=cfg.data.s3,
    )
    info = (
        champ.resolve_champion(champion, tracking_uri)
        if champion
        else champ.find_champion(tracking_uri, cfg.register_.model_name)
    )
    champ_scores: HoldoutScores | None = None
    champ_kind: str | None = None
    notes: list[str] = []
    if info is not None:
        say(f"scoring the held-out rows with the champion {info.label}")
        champ_kind, champ_clip, champ_trained = load_champion(info.uri, tracking_uri)
        # a champion of the other kind (train.model switched): only the metrics both kinds
        # support are compared, and the gate refuses the switch (pairflow.stages.evaluate.kinds)
        champ_cls = champ_trained if champ_kind == cand.kind else None
        champ_scores = score_holdout(
            champ_clip,
            holdout,
            prompts,
            classifier=champ_cls,
            batch_size=ev.batch_size,
            s3=cfg.data.s3,
        )
        if champ_cls is not None and champ_scores.logits is not None:
            champ_labels = list(champ_cls.labels or [])
            champ_scores.logits, note = align_logits(champ_scores.logits, champ_labels, class_names)
            notes += [note] if note else []
    rows = common_rows(cand_scores, *([champ_scores] if champ_scores else []))
    if rows.sum() < 2:
        raise InputDataError(
            f"evaluate: only {int(rows.sum())} of {len(holdout)} held-out images could be read"
        )
    labels = _label_index(
        holdout["label"] if "label" in holdout else pd.Series([None] * len(holdout)), class_names
    )
    ks = sorted(set(ev.recall_k))
    cand_m = model_metrics(cand_scores, rows, labels, class_names, ks)
    champ_m = model_metrics(champ_scores, rows, labels, class_names, ks) if champ_scores else None
    comparisons: list[DeltaCI] = []
    if champ_m is not None:
        for i, metric in enumerate(ev.non_inferiority_metrics):
            if metric in cand_m.per_query and metric in champ_m.per_query:
                comparisons.append(
                    paired_bootstrap(
                        metric,
                        cand_m.per_query[metric],
                        champ_m.per_query[metric],
                        samples=ev.bootstrap_samples,
                        confidence=ev.confidence,
                        seed=ev.seed + i,
                    )
                )
    say("building the drift reference of this run's training rows")
    emb, emb_note = _embeddings_for(train_rows, embeddings, cfg)
    current = build_reference(train_rows, emb)
    write_reference(reference_out, current)
    say("drift report")
    drift = _drift(info, current, cfg, drift_html, tracking_uri)
    extra: dict[str, Any] = {"reference_embeddings": emb_note}
    if serving_reference_out is not None:
        say("serving reference: this run's rows embedded by the candidate")
        extra["serving_reference"] = _serving_reference(
            cand.clip, holdout, cand_scores, train_rows, cfg, serving_reference_out
        )
    note = (
        f"champion {info.uri} is version {info.version}"
        if info is not None and info.version
        else f"champion {info.uri} (given explicitly)"
        if info is not None
        else f"no champion ({champ.champion_uri(cfg.register_.model_name)} not found)"
    )
    holdout_ids = [str(v) for v in holdout["id"]]
    gate = decide(
        cand.kind,
        cand_m.scalars,
        comparisons if champ_m is not None else None,
        ev,
        champion_note=note,
        drift=drift,
        chances=chance_levels(rows, labels, class_names),
        nonfinite=nonfinite_outputs(cand_scores, holdout_ids, class_names),
    )
    gate = with_kind_check(gate, cand.kind, champ_kind, info.label if info else "")
    log.info("evaluate gate %s: %s", "PASSED" if gate.passed else "FAILED", "; ".join(gate.reasons))
    return EvaluateResult(
        kind=cand.kind,
        rows=len(df),
        train_rows=len(train_rows),
        holdout_rows=len(holdout),
        evaluated_rows=int(rows.sum()),
        class_names=class_names,
        candidate=cand_m,
        champion=champ_m,
        champion_info=info,
        comparisons=comparisons,
        drift=drift,
        gate=gate,
        model_ref=model_ref,
        model_digest=cand.clip.digest,
        seconds=round(time.perf_counter() - start, 3),
        extra={**extra, **({"notes": notes} if notes else {})},
    )


def _serving_reference(
    clip: LoadedClip,
    holdout: pd.DataFrame,
    scores: HoldoutScores,
    train_rows: pd.DataFrame,
    cfg: PairflowConfig,
    out: Path,
) -> dict[str, Any]:
    """Write the serving reference; its row counts and seconds for the report."""

    start = time.perf_counter()
    ref = build_serving_reference(
        clip,
        holdout,
        scores,
        train_rows,
        train_sample=cfg.evaluate.serving_reference_train_rows,
        seed=cfg.evaluate.seed,
        batch_size=cfg.evaluate.batch_size,
        s3=cfg.data.s3,
    )
    write_reference(out, ref)
    return {
        "rows": len(ref.frame),
        "embedded_rows": int(ref.meta.get("embedded_ids", 0)),
        "holdout_rows": int(ref.meta["holdout_rows"]),
        "train_rows": int(ref.meta["train_rows"]),
        "seconds": round(time.perf_counter() - start, 3),
    }


def chance_levels(
    rows: np.ndarray, labels: np.ndarray, class_names: list[str]
) -> dict[str, Chance]:
    """Chance level of each floored metric on the evaluated rows (``rows`` mask)."""
    y = labels[rows]
    named = [class_names[i] for i in y[y >= 0]]
    acc = accuracy_chance(named)
    return {
        "i2t_recall_at_1": recall_chance(int(rows.sum())),
        "zero_shot_accuracy": acc,
        "accuracy": acc,
    }


def align_logits(
    logits: np.ndarray, labels: list[str], class_names: list[str]
) -> tuple[np.ndarray | None, str]:
    """The champion's logit columns reordered to the candidate's ``class_names``.

    None (and a note) when the two classifiers have different label sets: their accuracy
    cannot be compared, so the champion's classifier metrics are left out.
    """
    if labels == class_names:
        return logits, ""
    if sorted(labels) != sorted(class_names):
        return None, (
            f"champion classifier labels {labels} differ from the candidate's {class_names}: "
            "classifier metrics not compared"
        )
    return logits[:, [labels.index(c) for c in class_names]], ""


def _drift(
    info: champ.Champion | None,
    current: Reference,
    cfg: PairflowConfig,
    html: Path,
    tracking_uri: str,
) -> DriftOutcome:
    if info is None:
        return compare(None, current, cfg.evaluate, html, missing_reason="first run: no champion")
    with tempfile.TemporaryDirectory(prefix="pairflow-drift-ref-") as tmp:
        path = champ.fetch_reference(tracking_uri, info, Path(tmp))
        if path is None:
            where = (
                f"{champ.DRIFT_REFERENCE_ARTIFACT} in its run ({info.run_id})"
                if info.run_id
                else f"{champ.DRIFT_REFERENCE_FILE} in {info.uri}"
            )
            reason = f"champion {info.label} has no drift reference: no {where}"
            return compare(None, current, cfg.evaluate, html, missing_reason=reason)
        reference = read_reference(path)
    return compare(reference, current, cfg.evaluate, html)
