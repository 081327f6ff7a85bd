"""The rollout gate: absolute minimums, non-inferiority against the champion, drift policy.

Every check adds one reason line (``PASS ...`` / ``FAIL ...`` / ``WARN ...`` / ``SKIP ...``),
so the decision explains itself in report.json, MLflow and the KFP summary.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pairflow.evaluate.bootstrap import DeltaCI
from pairflow.evaluate.settings import EvaluateConfig


@dataclass
class DriftOutcome:
    """What the drift check found (``detected`` None: skipped, see ``reasons``)."""

    detected: bool | None
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass
class GateDecision:
    passed: bool
    enforced: bool
    reasons: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "enforced": self.enforced, "reasons": list(self.reasons)}


def absolute_floors(kind: str, cfg: EvaluateConfig) -> dict[str, float]:
    """Metric name → minimum, for a model ``kind`` ('clip' or 'classifier')."""
    if kind == "clip":
        return {"i2t_recall_at_1": cfg.min_recall_at_1, "zero_shot_accuracy": cfg.min_accuracy}
    return {"accuracy": cfg.min_accuracy}


def decide(
    kind: str,
    metrics: Mapping[str, float],
    comparisons: Sequence[DeltaCI] | None,
    cfg: EvaluateConfig,
    *,
    champion_note: str,
    drift: DriftOutcome | None = None,
) -> GateDecision:
    """Gate a candidate.

    ``comparisons`` None means there is no champion (first run): only the absolute minimums
    apply and ``champion_note`` says why. A NaN metric never passes a floor.
    """
    reasons: list[str] = []
    failed = False
    for name, floor in absolute_floors(kind, cfg).items():
        value = float(metrics.get(name, math.nan))
        if math.isnan(value) or value < floor:
            failed = True
            reasons.append(f"FAIL {name} = {value:.4f} < minimum {floor:.4f}")
        else:
            reasons.append(f"PASS {name} = {value:.4f} >= minimum {floor:.4f}")
    if comparisons is None:
        reasons.append(f"first run: {champion_note}; gated on absolute minimums only")
    else:
        reasons.append(champion_note)
        if not comparisons:
            failed = True
            reasons.append(
                "FAIL no non-inferiority metric applies to this model kind "
                f"(evaluate.non_inferiority_metrics = {list(cfg.non_inferiority_metrics)})"
            )
        margin = cfg.non_inferiority_margin
        for ci in comparisons:
            pct = round(ci.confidence * 100)
            text = (
                f"{ci.metric}: delta {ci.delta:+.4f} ({pct}% CI [{ci.low:+.4f}, {ci.high:+.4f}], "
                f"candidate {ci.candidate:.4f} vs champion {ci.champion:.4f}, n={ci.n})"
            )
            if ci.low >= -margin:
                reasons.append(f"PASS non-inferior {text} >= -{margin:.4f}")
            else:
                failed = True
                reasons.append(f"FAIL inferior {text}: lower bound < -{margin:.4f}")
    if drift is not None:
        if drift.detected is None:
            reasons.extend(f"SKIP drift: {r}" for r in drift.reasons)
        elif drift.detected and cfg.drift_policy == "fail":
            failed = True
            reasons.extend(f"FAIL drift (policy fail): {r}" for r in drift.reasons)
        elif drift.detected:
            reasons.extend(f"WARN drift (policy warn): {r}" for r in drift.reasons)
        else:
            reasons.extend(f"PASS drift: {r}" for r in drift.reasons)
    return GateDecision(passed=not failed, enforced=True, reasons=reasons)
