"""The retrain trigger's policy: one window's verdict + the trigger history → a decision.

:func:`decide` is pure (no clock, no I/O): the caller passes ``now`` and the history read from
MLflow (:mod:`pairflow.monitor.history`). Every outcome carries the numbers it was decided on,
so a skipped window is as explainable as a triggered one.

Order of the checks (the first that applies is the reason):

1. ``window_too_small``: fewer rows than ``monitor.min_window_rows``;
2. ``not_judged``: the drift monitor could not judge the window (no reference, ...);
3. ``no_drift``: neither drift nor a mean-score drop beyond ``monitor.score_drop_margin``;
4. ``already_submitted``: this window's key already has a retrain run (idempotency);
5. ``cooldown``: a retrain was triggered less than ``monitor.cooldown_hours`` ago;
6. ``trigger_disabled`` (``monitor.trigger=false``) / ``dry_run``: it would trigger, but
   submits nothing (the reason says so);
7. ``trigger``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pairflow.stages.monitor.settings import MonitorConfig
from pairflow.stages.monitor.verdict import WindowVerdict

Outcome = Literal["trigger", "skip"]
Reason = Literal[
    "trigger",
    "window_too_small",
    "not_judged",
    "no_drift",
    "already_submitted",
    "cooldown",
    "trigger_disabled",
    "dry_run",
]


@dataclass(frozen=True)
class TriggerHistory:
    """What earlier decisions left behind, for one model.

    ``last_triggered_at``/``last_triggered_key``: the newest submitted retrain;
    ``submitted``: window key → retrain run id (``""`` while a submission is in flight).
    """

    last_triggered_at: datetime | None = None
    last_triggered_key: str = ""
    submitted: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    """What the trigger decided for one window, and the numbers it decided on."""

    outcome: Outcome
    reason: Reason
    message: str  # one line: "cooldown: last triggered ..., next allowed ..."
    window_key: str
    causes: list[str]  # what made it a candidate: "drift", "score_drop"
    numbers: dict[str, Any]
    decided_at: str  # ISO 8601 UTC

    @property
    def triggered(self) -> bool:
        return self.outcome == "trigger"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="seconds")


def verdict_numbers(verdict: WindowVerdict, cfg: MonitorConfig) -> dict[str, Any]:
    """The figures every decision record carries, next to the limits they are compared with."""
    return {
        "rows": verdict.rows,
        "min_window_rows": cfg.min_window_rows,
        "reference_rows": verdict.reference_rows,
        "judged": verdict.judged,
        "drift": verdict.drift,
        "drift_share": verdict.drift_share,
        "drift_share_limit": cfg.drift_share,
        "drifted_columns": list(verdict.drifted_columns),
        "embedding_auc": dict(verdict.embedding_auc),
        "embedding_auc_limit": cfg.embedding_auc,
        "score_mean": verdict.score_mean,
        "reference_score_mean": verdict.reference_score_mean,
        "score_drop": verdict.score_drop,
        "score_drop_margin": cfg.score_drop_margin,
        "score_dropped": verdict.score_dropped,
        "cooldown_hours": cfg.cooldown_hours,
        "retrain_data": cfg.retrain_data,
    }


def _causes(verdict: WindowVerdict, cfg: MonitorConfig) -> list[str]:
    causes = []
    if verdict.drift:
        causes.append("drift")
    dropped = verdict.score_dropped or (
        verdict.score_drop is not None and verdict.score_drop > cfg.score_drop_margin
    )
    if dropped:
        causes.append("score_drop")
    return causes


def _drift_line(n: dict[str, Any]) -> str:
    parts = []
    if n["drift_share"] is not None:
        parts.append(f"drift share {n['drift_share']:.2f} (limit {n['drift_share_limit']:.2f})")
    for tower, auc in sorted(n["embedding_auc"].items()):
        parts.append(f"{tower} embedding AUC {auc:.3f} (limit {n['embedding_auc_limit']:.2f})")
    if n["score_drop"] is not None:
        parts.append(
            f"mean score drop {n['score_drop']:+.3f} (margin {n['score_drop_margin']:.3f})"
        )
    return ", ".join(parts) or "no figures"


def decide(
    verdict: WindowVerdict,
    history: TriggerHistory,
    cfg: MonitorConfig,
    now: datetime,
    dry_run: bool,
) -> Decision:
    """Decide whether ``verdict``'s window triggers a retrain (see the module docstring)."""
    if now.tzinfo is None:
        raise ValueError("decide: now must be timezone-aware (UTC)")
    key = verdict.window.key
    numbers = verdict_numbers(verdict, cfg)
    causes = _causes(verdict, cfg)
    numbers["causes"] = causes

    def done(outcome: Outcome, reason: Reason, message: str) -> Decision:
        return Decision(outcome, reason, message, key, causes, numbers, _iso(now))

    if verdict.rows < cfg.min_window_rows:
        return done(
            "skip",
            "window_too_small",
            f"window_too_small: {verdict.rows} < {cfg.min_window_rows} rows",
        )
    if not verdict.judged:
        why = "; ".join(verdict.reasons) or "the drift monitor gave no reason"
        return done("skip", "not_judged", f"not_judged: {why}")
    if not causes:
        return done("skip", "no_drift", f"no_drift: {_drift_line(numbers)}")
    if key in history.submitted:
        run = history.submitted[key] or "submission in flight (no run id recorded)"
        return done("skip", "already_submitted", f"already_submitted: {key} -> {run}")
    last = history.last_triggered_at
    if last is not None:
        if last.tzinfo is None:
            raise ValueError("decide: history.last_triggered_at must be timezone-aware")
        next_allowed = last + timedelta(hours=cfg.cooldown_hours)
        numbers["last_triggered_at"] = _iso(last)
        numbers["last_triggered_key"] = history.last_triggered_key
        numbers["next_allowed_at"] = _iso(next_allowed)
        if now < next_allowed:
            return done(
                "skip",
                "cooldown",
                f"cooldown: last triggered {_iso(last)}, next allowed {_iso(next_allowed)}",
            )
    would = f"would trigger on {' + '.join(causes)} ({_drift_line(numbers)})"
    if not cfg.trigger:
        return done("skip", "trigger_disabled", f"trigger_disabled: monitor.trigger=false; {would}")
    if dry_run:
        return done("skip", "dry_run", f"dry_run: {would}; nothing submitted")
    return done("trigger", "trigger", f"trigger: {' + '.join(causes)} ({_drift_line(numbers)})")
