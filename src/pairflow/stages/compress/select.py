"""The selection rule: which measured variant ships."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pairflow.models.errors import CompressError, LatencyBudgetError

BASELINE = "fp32_torch"
_EPS = 1e-9


@dataclass(frozen=True)
class Choice:
    name: str
    reason: str
    eligible: list[str]
    budget: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "chosen": self.name,
            "reason": self.reason,
            "eligible": self.eligible,
        }
        if self.budget is not None:
            out["latency_budget"] = self.budget
        return out


def delta_name(metric: str) -> str:
    """Key of a quality metric's delta from fp32: ``recall_delta`` / ``accuracy_delta``."""
    return "recall_delta" if metric == "recall_at_1" else f"{metric}_delta"


def choose_variant(
    metrics: Mapping[str, Mapping[str, Any]],
    rule: str,
    max_recall_drop: float,
    batch_size: int,
    metric: str = "recall_at_1",
    *,
    champion_p50_ms: float | None = None,
    max_slowdown: float | None = None,
) -> Choice:
    """Pick a variant from per-variant ``metrics`` (the ``metric``'s delta, ``size_bytes``,
    ``latency_ms[str(batch_size)]["p50_ms"]``).

    Eligible: the fp32 baseline and every variant whose ``metric`` (recall@1, or accuracy
    for classifiers) is at most ``max_recall_drop`` below it. ``fastest`` takes the lowest
    p50 at ``batch_size``, ``smallest`` the fewest bytes, ``fp32_torch`` the baseline.

    Latency budget: with the champion's p50 (measured interleaved with the variants) and
    ``max_slowdown``, eligible variants must also be no slower than ``champion x (1 +
    max_slowdown)``; when none is, the fastest quality-eligible variant is chosen and the
    budget is recorded as not met (:func:`enforce_latency_budget` then stops compress, or
    lets the canary judge it; the reason says why).
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

    def p50(name: str) -> float:
        return float(metrics[name]["latency_ms"][str(batch_size)]["p50_ms"])

    budget: dict[str, Any] | None = None
    if champion_p50_ms is not None and max_slowdown is not None:
        limit = champion_p50_ms * (1 + max_slowdown)
        fits = [n for n in eligible if p50(n) <= limit + _EPS]
        budget = {
            "champion_p50_ms": round(champion_p50_ms, 3),
            "max_slowdown": max_slowdown,
            "limit_ms": round(limit, 3),
            "batch_size": batch_size,
            "met": bool(fits),
        }
        if not fits:
            name = min(eligible, key=p50)
            budget["chosen_p50_ms"] = p50(name)
            reason = (
                f"latency budget not met: no variant within {max_recall_drop:.3f} {label} of "
                f"fp32 is at most {limit:.2f} ms at batch {batch_size} (champion "
                f"{champion_p50_ms:.2f} ms + {max_slowdown:.0%}); fastest eligible "
                f"{name} at {p50(name):.2f} ms"
            )
            return Choice(name, reason, eligible, budget)
        eligible = fits
    if rule == "fp32_torch":
        if budget is not None and BASELINE not in eligible:
            name = min(eligible, key=p50)
            budget["chosen_p50_ms"] = p50(name)
            why = f"fp32_torch over the latency budget ({budget['limit_ms']} ms); fastest: {name}"
            return Choice(name, why, eligible, budget)
        return Choice(BASELINE, "selection rule fp32_torch", eligible, budget)

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
    if budget is not None:
        budget["chosen_p50_ms"] = p50(name)
        reason += (
            f"; within the latency budget {budget['limit_ms']} ms (champion "
            f"{champion_p50_ms:.2f} ms + {max_slowdown:.0%})"
        )
    return Choice(name, reason, eligible, budget)


def enforce_latency_budget(choice: Choice, policy: str, table: str) -> None:
    """Raise :class:`LatencyBudgetError` when ``choice`` missed its latency budget and
    ``policy`` (``compress.on_latency_budget_miss``) is ``stop``; ``table`` names where the
    measured variants are written."""
    if choice.budget is None or choice.budget["met"] or policy == "canary":
        return
    if policy != "stop":
        raise CompressError(f"compress.on_latency_budget_miss: unknown policy {policy!r}")
    raise LatencyBudgetError(
        f"{choice.reason}. Nothing ships (compress.on_latency_budget_miss=stop); the measured "
        f"variants are in {table}. To let the canary judge the fastest variant instead, set "
        "compress.on_latency_budget_miss=canary; to drop the budget, "
        "compress.max_slowdown_vs_champion=null."
    )
