"""The rollout gate: finite outputs, floors above chance, non-inferiority, drift policy.

Every check adds one reason line (``PASS ...`` / ``FAIL ...`` / ``WARN ...`` / ``SKIP ...``)
and one structured entry in :attr:`GateDecision.checks` (statistic, interval, sample size,
threshold), so the decision explains itself in report.json, MLflow, the KFP summary and the
registered version's decision table.

Floors are meaningful by default: a metric's chance level comes from the held-out rows (1/n
for recall@1 over n queries, the majority class share for accuracy); the floor is ``chance +
evaluate.floor_over_chance x (1 - chance)`` unless ``evaluate.min_*`` sets it explicitly, and
the one-sided lower confidence bound of the metric (Clopper-Pearson) must also clear chance.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from scipy import stats

from pairflow.drift.compare import DriftOutcome
from pairflow.stages.evaluate.bootstrap import DeltaCI
from pairflow.stages.evaluate.settings import EvaluateConfig


@dataclass
class GateDecision:
    passed: bool
    enforced: bool
    reasons: list[str]
    checks: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "enforced": self.enforced,
            "reasons": list(self.reasons),
            "checks": [dict(c) for c in self.checks],
        }


@dataclass(frozen=True)
class Chance:
    """A metric's chance level on the evaluated rows: value, sample size, how it was derived."""

    value: float
    n: int
    note: str


@dataclass(frozen=True)
class Floor:
    metric: str
    floor: float
    chance: Chance
    source: str  # "explicit" (evaluate.min_*) or "chance"


def absolute_floors(kind: str, cfg: EvaluateConfig) -> dict[str, float | None]:
    """Metric name → explicit minimum (None: derived from chance), for a model ``kind``.

    A CLIP model is gated on retrieval (its claim); its zero-shot accuracy ("a {label}"
    prompts) is gated only when ``evaluate.min_accuracy`` is set, else reported against
    chance (:func:`unfloored`)."""
    if kind == "clip":
        out: dict[str, float | None] = {"i2t_recall_at_1": cfg.min_recall_at_1}
        if cfg.min_accuracy is not None:
            out["zero_shot_accuracy"] = cfg.min_accuracy
        return out
    return {"accuracy": cfg.min_accuracy}


def unfloored(kind: str, cfg: EvaluateConfig) -> list[str]:
    """Metrics reported against chance without a floor."""
    return ["zero_shot_accuracy"] if kind == "clip" and cfg.min_accuracy is None else []


def recall_chance(n: int) -> Chance:
    """Recall@1 of a random ranking over ``n`` items: 1/n."""
    return Chance(1.0 / n if n else math.nan, n, f"1/{n} held-out queries")


def accuracy_chance(labels: Sequence[str]) -> Chance:
    """Accuracy of always answering the majority class of ``labels``."""
    if not labels:
        return Chance(math.nan, 0, "no labelled rows")
    values, counts = _counts(labels)
    top = int(max(counts))
    name = values[counts.index(top)]
    n = len(labels)
    return Chance(top / n, n, f"majority class {name!r} {top}/{n} of {len(values)} classes")


def _counts(labels: Sequence[str]) -> tuple[list[str], list[int]]:
    tally: dict[str, int] = {}
    for label in labels:
        tally[label] = tally.get(label, 0) + 1
    return list(tally), list(tally.values())


def floors(kind: str, cfg: EvaluateConfig, chances: Mapping[str, Chance]) -> list[Floor]:
    """The floors that apply, explicit or ``chance + floor_over_chance x (1 - chance)``."""
    out: list[Floor] = []
    for metric, explicit in absolute_floors(kind, cfg).items():
        chance = chances.get(metric, Chance(math.nan, 0, "unknown"))
        if explicit is not None:
            out.append(Floor(metric, explicit, chance, "explicit"))
        elif math.isnan(chance.value):
            out.append(Floor(metric, math.nan, chance, "chance"))
        else:
            value = chance.value + cfg.floor_over_chance * (1.0 - chance.value)
            out.append(Floor(metric, value, chance, "chance"))
    return out


def lower_bound(value: float, n: int, confidence: float) -> float:
    """One-sided Clopper-Pearson lower bound of a proportion ``value`` observed on ``n``."""
    if n <= 0 or math.isnan(value):
        return math.nan
    k = round(value * n)
    if k == 0:
        return 0.0
    return float(stats.beta.ppf(1.0 - confidence, k, n - k + 1))


def _floor_check(
    f: Floor, value: float, confidence: float, above_chance: bool = True
) -> tuple[bool, str, dict[str, Any]]:
    chance, n = f.chance, f.chance.n
    low = lower_bound(value, n, confidence)
    pct = round(confidence * 100)
    shown = (
        f"{f.metric} = {value:.4f} (n={n}, {pct}% lower bound {low:.4f}); chance "
        f"{chance.value:.4f} ({chance.note}); minimum {f.floor:.4f} ({f.source})"
    )
    check = {
        "check": "floor",
        "metric": f.metric,
        "value": value,
        "n": n,
        "lower_bound": low,
        "confidence": confidence,
        "chance": chance.value,
        "chance_note": chance.note,
        "threshold": f.floor,
        "threshold_source": f.source,
    }
    if math.isnan(value) or math.isnan(f.floor):
        return False, f"FAIL {shown}: not measurable", {**check, "passed": False}
    if value < f.floor:
        return False, f"FAIL {shown}: below the minimum", {**check, "passed": False}
    if not above_chance:
        check["chance_check"] = "off"
        return True, f"PASS {shown} (chance check off)", {**check, "passed": True}
    if not math.isnan(chance.value) and not low > chance.value:
        why = f"FAIL {shown}: not above chance at {pct}% confidence"
        return False, why, {**check, "passed": False}
    return True, f"PASS {shown}", {**check, "passed": True}


def decide(
    kind: str,
    metrics: Mapping[str, float],
    comparisons: Sequence[DeltaCI] | None,
    cfg: EvaluateConfig,
    *,
    champion_note: str,
    drift: DriftOutcome | None = None,
    chances: Mapping[str, Chance] | None = None,
    nonfinite: Sequence[tuple[str, int, int, Sequence[str]]] = (),
) -> GateDecision:
    """Gate a candidate.

    ``comparisons`` None means there is no champion (first run): only the floors apply and
    ``champion_note`` says why. A NaN metric never passes a floor. ``chances`` gives each
    floored metric's chance level (missing: the chance check is skipped, the explicit floor
    or NaN applies). ``nonfinite`` lists (what, bad count, rows, bad row ids) for outputs
    holding NaN/inf: each fails the gate.
    """
    reasons: list[str] = []
    checks: list[dict[str, Any]] = []
    failed = False
    for what, count, total, ids in nonfinite:
        failed = True
        shown = ", ".join(str(i) for i in list(ids)[:10]) + (", ..." if len(ids) > 10 else "")
        reasons.append(f"FAIL non-finite {what}: {count} of {total} rows ({shown})")
        checks.append(
            {
                "check": "finite",
                "metric": what,
                "value": count,
                "n": total,
                "threshold": 0,
                "rows": [str(i) for i in list(ids)[:50]],
                "passed": False,
            }
        )
    for floor in floors(kind, cfg, chances or {}):
        value = float(metrics.get(floor.metric, math.nan))
        ok, reason, check = _floor_check(floor, value, cfg.confidence, cfg.require_above_chance)
        failed = failed or not ok
        reasons.append(reason)
        checks.append(check)
    for metric in unfloored(kind, cfg):
        value = float(metrics.get(metric, math.nan))
        chance = (chances or {}).get(metric)
        if chance is None or math.isnan(value):
            continue
        low = lower_bound(value, chance.n, cfg.confidence)
        above = "above" if low > chance.value else "NOT above"
        reasons.append(
            f"INFO {metric} = {value:.4f} (n={chance.n}, {round(cfg.confidence * 100)}% lower "
            f"bound {low:.4f}) {above} chance {chance.value:.4f} ({chance.note}); not gated "
            "(evaluate.min_accuracy unset)"
        )
        checks.append(
            {
                "check": "report",
                "metric": metric,
                "value": value,
                "n": chance.n,
                "lower_bound": low,
                "chance": chance.value,
                "chance_note": chance.note,
                "passed": True,
            }
        )
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
            ok = ci.low >= -margin
            checks.append(
                {
                    "check": "non_inferiority",
                    "metric": ci.metric,
                    "test": "paired bootstrap",
                    "value": ci.delta,
                    "interval": [ci.low, ci.high],
                    "confidence": ci.confidence,
                    "candidate": ci.candidate,
                    "champion": ci.champion,
                    "n": ci.n,
                    "threshold": -margin,
                    "passed": ok,
                }
            )
            if ok:
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
        checks.append(
            {
                "check": "drift",
                "value": drift.detected,
                "policy": cfg.drift_policy,
                "passed": not (drift.detected and cfg.drift_policy == "fail"),
            }
        )
    return GateDecision(passed=not failed, enforced=True, reasons=reasons, checks=checks)
