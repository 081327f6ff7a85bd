"""The serving reference: this run's data as the *candidate* model sees it.

The drift reference (:mod:`pairflow.drift.reference`) holds the filter model's embeddings,
so it compares training data across runs. Served traffic is logged with the serving model's
own embeddings and pair scores (:mod:`pairflow.serve.requestlog.records`), so the drift monitor
needs
a reference embedded and scored by the model that serves: the held-out rows (already
embedded by the candidate for the metrics, so free) plus up to
``evaluate.serving_reference_train_rows`` training rows drawn with ``evaluate.seed``. Same
Parquet format as the drift reference; ``clip_score`` is the candidate's own cosine of each
pair, and ``meta`` carries ``role: serving``, the model's digest and the row counts. The
register step logs it with the version as
:data:`pairflow.registry.champion.SERVING_REFERENCE_ARTIFACT`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pairflow.config import S3Config
from pairflow.drift.reference import Reference, build_reference
from pairflow.models.clip import LoadedClip
from pairflow.models.embeddings import Embeddings
from pairflow.stages.evaluate.scoring import HoldoutScores, score_holdout

ROLE = "serving"


def build_serving_reference(
    clip: LoadedClip,
    holdout: pd.DataFrame,
    holdout_scores: HoldoutScores,
    train_rows: pd.DataFrame,
    *,
    train_sample: int,
    seed: int,
    batch_size: int = 64,
    s3: S3Config | None = None,
) -> Reference:
    """Held-out rows (with ``holdout_scores``) and up to ``train_sample`` training rows
    embedded by ``clip``; rows whose image failed keep their metadata without embeddings."""
    if train_sample < 0:
        raise ValueError(f"serving reference: train_sample must be >= 0, got {train_sample}")
    rng = np.random.default_rng(seed)
    take = min(train_sample, len(train_rows))
    picked = np.sort(rng.choice(len(train_rows), size=take, replace=False))
    extra = train_rows.iloc[picked].reset_index(drop=True)
    parts = [(holdout.reset_index(drop=True), holdout_scores)]
    if len(extra):
        parts.append((extra, score_holdout(clip, extra, [], batch_size=batch_size, s3=s3)))
    ids: list[str] = []
    image: list[np.ndarray] = []
    text: list[np.ndarray] = []
    for rows, scores in parts:
        ids += [str(v) for v in rows["id"].to_numpy()[scores.ok]]
        image.append(scores.image[scores.ok])
        text.append(scores.text[scores.ok])
    img, txt = np.concatenate(image), np.concatenate(text)
    emb = Embeddings(
        ids=ids,
        image=img.astype(np.float16),
        text=txt.astype(np.float16),
        scores=np.einsum("ij,ij->i", img, txt).astype(np.float32),
        meta={"model_ref": clip.ref, "model_digest": clip.digest},
    )
    ref = build_reference(pd.concat([p[0] for p in parts], ignore_index=True), emb)
    ref.meta.update(role=ROLE, holdout_rows=len(holdout), train_rows=len(extra))
    return ref
