"""Classification metrics over labels, predictions and probabilities (pure numpy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.integer]


def confusion_matrix(labels: IntArray, preds: IntArray, n_classes: int) -> npt.NDArray[np.int64]:
    """``m[t, p]`` = rows of true class ``t`` predicted as ``p``."""
    y, p = np.asarray(labels, dtype=np.int64), np.asarray(preds, dtype=np.int64)
    if y.shape != p.shape:
        raise ValueError(f"labels {y.shape} and predictions {p.shape} differ in shape")
    if y.size and (min(y.min(), p.min()) < 0 or max(y.max(), p.max()) >= n_classes):
        raise ValueError(f"class indices must be in [0, {n_classes})")
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(m, (y, p), 1)
    return m


def _ratio(num: npt.NDArray[np.number], den: npt.NDArray[np.number]) -> npt.NDArray[np.float64]:
    """num / den, 0 where den == 0 (sklearn's zero_division=0)."""
    out = np.zeros(np.shape(num), dtype=np.float64)
    np.divide(num, den, out=out, where=np.asarray(den) > 0)
    return out


def expected_calibration_error(
    probs: npt.NDArray[np.floating], labels: IntArray, bins: int = 15
) -> float:
    """ECE: sum over equal-width confidence bins of |accuracy - confidence| x bin share."""
    pr = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if pr.ndim != 2 or pr.shape[0] != y.shape[0]:
        raise ValueError(f"probabilities {pr.shape} do not match {y.shape[0]} labels")
    if y.size == 0:
        return float("nan")
    conf = pr.max(axis=1)
    correct = (pr.argmax(axis=1) == y).astype(np.float64)
    # bin b holds confidences in (b/bins, (b+1)/bins]; confidence 0 goes to bin 0
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    acc_sum = np.bincount(idx, weights=correct, minlength=bins)
    conf_sum = np.bincount(idx, weights=conf, minlength=bins)
    return float(np.abs(acc_sum - conf_sum).sum() / y.size)


def classification_metrics(
    labels: IntArray,
    preds: IntArray,
    class_names: Sequence[str],
    probs: npt.NDArray[np.floating] | None = None,
    prefix: str = "",
) -> tuple[dict[str, float], npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Accuracy, macro-F1, per-class precision/recall (and ECE given ``probs``).

    Returns (scalars, confusion matrix, per-row correctness for the bootstrap). Macro-F1
    averages over classes present in labels or predictions.
    """
    n = len(class_names)
    m = confusion_matrix(labels, preds, n)
    tp = np.diagonal(m).astype(np.int64)
    precision = _ratio(tp, m.sum(axis=0))
    recall = _ratio(tp, m.sum(axis=1))
    f1 = _ratio(2 * precision * recall, precision + recall)
    present = (m.sum(axis=0) + m.sum(axis=1)) > 0
    correct = (np.asarray(labels) == np.asarray(preds)).astype(np.float64)
    scalars: dict[str, float] = {
        f"{prefix}accuracy": float(correct.mean()) if correct.size else float("nan"),
        f"{prefix}macro_f1": float(f1[present].mean()) if present.any() else float("nan"),
    }
    for i, name in enumerate(class_names):
        scalars[f"{prefix}precision.{name}"] = float(precision[i])
        scalars[f"{prefix}recall.{name}"] = float(recall[i])
    if probs is not None:
        scalars[f"{prefix}ece"] = expected_calibration_error(probs, labels)
    return scalars, m, correct
