"""The selection rule: which measured variant ships."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pairflow.compress.errors import CompressError

BASELINE = "fp32_torch"
_EPS = 1e-9


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str
    eligible: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"chosen": self.name, "reason": self.reason, "eligible": self.eligible}


def delta_name(metric: str) -> str:
    """Key of a quality metric's delta from fp32: ``recall_delta`` / ``accuracy_delta``."""
    return "recall_delta" if metric == "recall_at_1" else f"{metric}_delta"


def choose_variant(
    metrics: Mapping[str, Mapping[str, Any]],
    rule: str,
    max_recall_drop: float,
    batch_size: int,
    metric: str = "recall_at_1",
) -> Choice:
    """Pick a variant from per-variant ``metrics`` (the ``metric``'s delta, ``size_bytes``,
    ``latency_ms[str(batch_size)]["p50_ms"]``).

    Eligible: the fp32 baseline and every variant whose ``metric`` (recall@1, or accuracy
    for classifiers) is at most ``max_recall_drop`` below it. ``fastest`` takes the lowest
    p50 at ``batch_size``, ``smallest`` the fewest bytes, ``fp32_torch`` the baseline.
    """
    if BASELINE not in metrics:
        raise CompressError(f"selection needs the {BASELINE!r} baseline among the variants")
    delta = delta_name(metric)
    label = "recall@1" if metric == "recall_at_1" else metric
    eligible = [
        name
        for name, m in metrics.items()
        if name == BASELINE or float(m[delta]) >= -max_recall_drop - _EPS
    ]
    if rule == "fp32_torch":
        return Choice(BASELINE, "selection rule fp32_torch", eligible)

    def p50(name: str) -> float:
        return float(metrics[name]["latency_ms"][str(batch_size)]["p50_ms"])

    if rule == "fastest":
        name = min(eligible, key=p50)
        reason = (
            f"fastest at batch {batch_size} (p50 {p50(name):.2f} ms vs {p50(BASELINE):.2f} ms "
            f"fp32 torch) among variants within {max_recall_drop:.3f} {label} of fp32"
        )
    elif rule == "smallest":
        name = min(eligible, key=lambda n: int(metrics[n]["size_bytes"]))
        reason = (
            f"smallest ({metrics[name]['size_bytes']} bytes) among variants within "
            f"{max_recall_drop:.3f} {label} of fp32"
        )
    else:
        raise CompressError(f"compress.selection: unknown rule {rule!r}")
    return Choice(name, reason, eligible)
