"""Evaluation plots for reviewers: one self-contained HTML page of PNG figures.

- recall@k, image→text and text→image, candidate next to the champion;
- every candidate − champion delta with its paired-bootstrap interval, against the gate's
  non-inferiority margin;
- the confusion matrix of the candidate (and of the champion when there is one).

The page embeds the PNGs as data URIs, so it renders as a KFP HTML artifact and as an MLflow
artifact without any other file.
"""

from __future__ import annotations

import base64
import html
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from pairflow.stages.evaluate.bootstrap import DeltaCI
    from pairflow.stages.evaluate.run import EvaluateResult

_RECALL = re.compile(r"^(i2t|t2i)_recall_at_(\d+)$")
_DIRECTIONS = {"i2t": "image → text", "t2i": "text → image"}


@dataclass(frozen=True)
class Plot:
    """One figure of the page: a title and its PNG bytes."""

    title: str
    png: bytes


def _figure(width: float, height: float) -> Figure:
    # lazy: matplotlib (slow to import); only this path needs it
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def recall_plot(candidate: dict[str, float], champion: dict[str, float] | None) -> Plot | None:
    """Grouped bars of recall@k per direction; ``None`` when there is no recall metric."""
    keys = sorted(
        (m.group(1), int(m.group(2)), name)
        for name in candidate
        if (m := _RECALL.match(name)) and candidate[name] == candidate[name]
    )
    if not keys:
        return None
    directions = sorted({d for d, _, _ in keys})
    fig = _figure(4.2 * len(directions), 3.2)
    axes = fig.subplots(1, len(directions), squeeze=False)[0]
    for ax, direction in zip(axes, directions, strict=True):
        rows = [(k, name) for d, k, name in keys if d == direction]
        x = np.arange(len(rows))
        models = [("candidate", candidate)] + ([("champion", champion)] if champion else [])
        width = 0.8 / len(models)
        for i, (label, values) in enumerate(models):
            heights = [values.get(name, float("nan")) for _, name in rows]
            ax.bar(x + (i - (len(models) - 1) / 2) * width, heights, width, label=label)
        ax.set_xticks(x, [f"R@{k}" for k, _ in rows])
        ax.set_ylim(0, 1)
        ax.set_title(_DIRECTIONS.get(direction, direction))
        ax.legend(loc="lower right", fontsize="small")
    return Plot("Retrieval recall@k on the held-out rows", _png(fig))


def delta_plot(comparisons: Sequence[DeltaCI], margin: float | None) -> Plot | None:
    """Candidate − champion deltas with their intervals; ``None`` without a champion."""
    if not comparisons:
        return None
    fig = _figure(6.0, 0.45 * len(comparisons) + 1.2)
    ax = fig.subplots()
    y = np.arange(len(comparisons))[::-1]
    deltas = np.array([c.delta for c in comparisons])
    err = np.array(
        [[c.delta - c.low for c in comparisons], [c.high - c.delta for c in comparisons]]
    )
    ax.errorbar(deltas, y, xerr=err, fmt="o", capsize=3)
    ax.axvline(0.0, color="grey", linewidth=1)
    if margin is not None:
        ax.axvline(-margin, color="tab:red", linestyle="--", linewidth=1, label=f"-{margin:g}")
        ax.legend(loc="lower right", fontsize="small", title="gate margin")
    ax.set_yticks(y, [c.metric for c in comparisons])
    confidence = comparisons[0].confidence
    ax.set_xlabel(f"candidate − champion ({confidence:.0%} paired-bootstrap interval)")
    return Plot("Deltas against the champion", _png(fig))


def confusion_plot(matrix: np.ndarray, class_names: Sequence[str], title: str) -> Plot:
    """Heatmap of ``matrix[t, p]`` with counts in the cells."""
    n = len(class_names)
    fig = _figure(1.0 + 0.6 * n, 0.8 + 0.6 * n)
    ax = fig.subplots()
    ax.imshow(matrix, cmap="Blues")
    peak = matrix.max() if matrix.size else 0
    for (t, p), value in np.ndenumerate(matrix):
        color = "white" if peak and value > peak / 2 else "black"
        ax.text(p, t, str(int(value)), ha="center", va="center", color=color, fontsize="small")
    ax.set_xticks(range(n), list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return Plot(title, _png(fig))


def evaluation_plots(result: EvaluateResult, margin: float | None = None) -> list[Plot]:
    """Every plot that ``result`` has data for."""
    champion = result.champion.scalars if result.champion is not None else None
    plots = [
        recall_plot(result.candidate.scalars, champion),
        delta_plot(result.comparisons, margin),
    ]
    for name, metrics in (("candidate", result.candidate), ("champion", result.champion)):
        if metrics is not None and metrics.confusion is not None and result.class_names:
            source = metrics.confusion_source.replace("_", "-") or "labels"
            title = f"Confusion matrix of the {name} ({source})"
            plots.append(confusion_plot(metrics.confusion, result.class_names, title))
    return [p for p in plots if p is not None]


def plots_html(plots: Sequence[Plot], heading: str) -> str:
    """A standalone HTML page with ``plots`` embedded as PNG data URIs."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(heading)}</title></head><body style='font-family:sans-serif'>",
        f"<h1>{html.escape(heading)}</h1>",
    ]
    if not plots:
        parts.append("<p>No metric to plot.</p>")
    for plot in plots:
        data = base64.b64encode(plot.png).decode()
        parts.append(f"<h2>{html.escape(plot.title)}</h2>")
        parts.append(f"<img alt='{html.escape(plot.title)}' src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_plots(result: EvaluateResult, out: Path, margin: float | None = None) -> int:
    """Write the plots page of ``result`` to ``out``; returns the number of plots."""
    plots = evaluation_plots(result, margin)
    heading = f"pairflow evaluate: {result.model_ref}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(plots_html(plots, heading), encoding="utf-8")
    return len(plots)
