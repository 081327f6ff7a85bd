"""Run a model over the held-out rows: joint embeddings, label-prompt embeddings, logits.

Images are read, decoded and preprocessed exactly as the clip-filter does (its
``PairDataset`` and ``Collate``); rows whose image fails are left out of every metric
(for both models alike, see :func:`common_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pairflow.config import S3Config
from pairflow.models.clip import LoadedClip, features
from pairflow.models.scoring import Batch, Collate, PairDataset, embed_batch


@dataclass
class HoldoutScores:
    """Per held-out row (positional; ``ok`` False where the image failed)."""

    ok: np.ndarray  # bool (n,)
    image: np.ndarray  # float32 (n, d), L2-normalised
    text: np.ndarray  # float32 (n, d)
    prompts: np.ndarray  # float32 (classes, d): label-prompt embeddings
    logits: np.ndarray | None  # float32 (n, classes) for classifiers


def embed_texts(clip: LoadedClip, texts: Sequence[str]) -> np.ndarray:
    """L2-normalised float32 text embeddings."""
    if not texts:
        return np.zeros((0, clip.embed_dim), dtype=np.float32)
    enc = clip.processor.tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=clip.max_text_length,
        return_tensors="pt",
    )
    with torch.inference_mode():
        out = clip.model.get_text_features(
            input_ids=enc["input_ids"].to(clip.device),
            attention_mask=enc["attention_mask"].to(clip.device),
        )
    return F.normalize(features(out).float(), dim=-1).cpu().numpy()


def score_holdout(
    clip: LoadedClip,
    df: pd.DataFrame,
    prompts: Sequence[str],
    *,
    classifier: Any | None = None,
    batch_size: int = 64,
    s3: S3Config | None = None,
    read_retries: int = 3,
) -> HoldoutScores:
    """Embed every held-out pair (and classify it when ``classifier`` has ``classify``)."""
    n, dim = len(df), clip.embed_dim
    ok = np.zeros(n, dtype=bool)
    image = np.zeros((n, dim), dtype=np.float32)
    text = np.zeros((n, dim), dtype=np.float32)
    logits: np.ndarray | None = None
    dataset = PairDataset(df["image"].tolist(), df["caption"].tolist(), s3, read_retries)
    loader: DataLoader[Any] = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=0,
        collate_fn=Collate(clip.processor, clip.max_text_length),
    )
    batch: Batch
    for batch in loader:
        if batch.pixel_values is None or batch.input_ids is None or len(batch.indices) == 0:
            continue
        idx = batch.indices.numpy()
        img, txt = embed_batch(clip, batch)
        image[idx], text[idx], ok[idx] = img.numpy(), txt.numpy(), True
        if classifier is not None:
            mask = batch.attention_mask
            with torch.inference_mode():
                out = classifier.classify(
                    batch.pixel_values,
                    batch.input_ids,
                    mask if mask is not None else torch.ones_like(batch.input_ids),
                )
            values = out.float().cpu().numpy()
            if logits is None:
                logits = np.full((n, values.shape[1]), np.nan, dtype=np.float32)
            logits[idx] = values
    return HoldoutScores(ok, image, text, embed_texts(clip, prompts), logits)


def common_rows(*scores: HoldoutScores) -> np.ndarray:
    """Rows every model could score."""
    mask = np.ones(len(scores[0].ok), dtype=bool)
    for s in scores:
        mask &= s.ok
    return mask
