"""The canary controller: steps, bakes, interim and final analyses, rollback or promotion.

For every step below 100% it sets the candidate's weight, bakes while looking at the data
every ``check_interval_s`` (an interim look fails fast on a clear regression or a dead
candidate), then judges the step on the whole post-warm-up window. Too few samples extend the
bake (``analysis.max_extensions``) or fail, never pass. The step at 100% is the promotion
itself: at 100% no stable traffic exists to compare against in the same window.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pairflow.deploy.analysis import StepAnalysis, Verdict, analyze_step
from pairflow.deploy.backend import CanaryBackend, MetricsUnavailable
from pairflow.deploy.settings import DeployConfig

log = logging.getLogger("pairflow.deploy.controller")

PROMOTED, ROLLED_BACK = "promoted", "rolled_back"


@dataclass
class StepRecord:
    """What happened at one step: weight, window, bakes, the analysis and why it ended."""

    weight: int
    start: float
    end: float = 0.0
    bakes: int = 0
    interim_looks: int = 0
    fail_fast: bool = False
    analysis: StepAnalysis | None = None
    verdict: str = ""
    reasons: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "weight": self.weight,
            "seconds": round(self.end - self.start, 3),
            "bakes": self.bakes,
            "interim_looks": self.interim_looks,
            "fail_fast": self.fail_fast,
            "verdict": self.verdict,
            "reasons": self.reasons,
        }
        if self.analysis is not None:
            out.update(self.analysis.to_json())
            out["verdict"] = self.verdict
            out["reasons"] = self.reasons
        return out


@dataclass
class CanaryResult:
    decision: str
    reasons: list[str]
    steps: list[StepRecord]

    def to_json(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "reasons": self.reasons,
            "steps": [s.to_json() for s in self.steps],
        }


def run_canary(
    backend: CanaryBackend,
    cfg: DeployConfig,
    *,
    on_step: Callable[[StepRecord], None] | None = None,
) -> CanaryResult:
    """Roll the candidate out through ``cfg.steps``; roll back on the first failed step."""
    steps: list[StepRecord] = []
    for weight in cfg.steps:
        if weight == 100:
            break
        rec = _run_step(backend, cfg, weight)
        steps.append(rec)
        if on_step is not None:
            on_step(rec)
        if rec.verdict != Verdict.PASS:
            log.warning("step %d%% %s: %s; rolling back", weight, rec.verdict, rec.reasons)
            backend.rollback()
            return CanaryResult(ROLLED_BACK, [f"step {weight}%: {r}" for r in rec.reasons], steps)
        log.info("step %d%% passed", weight)
    backend.promote()
    return CanaryResult(PROMOTED, [f"all {len(steps)} analysed steps passed"], steps)


def _run_step(backend: CanaryBackend, cfg: DeployConfig, weight: int) -> StepRecord:
    backend.set_weight(weight)
    rec = StepRecord(weight=weight, start=time.time())
    try:
        return _bake_and_judge(backend, cfg, rec)
    except MetricsUnavailable as exc:
        return _end(rec, Verdict.FAIL, [f"metrics unavailable: {exc}"])


def _bake_and_judge(backend: CanaryBackend, cfg: DeployConfig, rec: StepRecord) -> StepRecord:
    weight = rec.weight
    acfg = cfg.analysis
    analysed_from = rec.start + acfg.warmup_s
    budget = cfg.bake_s + acfg.warmup_s
    for extension in range(acfg.max_extensions + 1):
        deadline = time.time() + budget
        rec.bakes += 1
        while (left := deadline - time.time()) > 0:
            backend.bake(min(cfg.check_interval_s, left))
            dead = backend.health()
            if dead is not None:
                return _end(rec, Verdict.FAIL, [f"candidate unhealthy: {dead}"], fail_fast=True)
            if deadline - time.time() <= 0:
                break
            stable, cand = backend.window(analysed_from, time.time())
            look = analyze_step(stable, cand, acfg, cfg.min_requests, interim=True)
            rec.interim_looks += 1
            if look.verdict == Verdict.FAIL:
                rec.analysis = look
                return _end(rec, Verdict.FAIL, look.reasons, fail_fast=True)
        stable, cand = backend.window(analysed_from, time.time())
        rec.analysis = analyze_step(stable, cand, acfg, cfg.min_requests)
        verdict = rec.analysis.verdict
        if verdict != Verdict.INCONCLUSIVE:
            return _end(rec, verdict, rec.analysis.reasons)
        if acfg.inconclusive == "fail" or extension == acfg.max_extensions:
            break
        log.info("step %d%% inconclusive (%s); extending the bake", weight, rec.analysis.reasons)
        budget = cfg.bake_s
    assert rec.analysis is not None
    reasons = [*rec.analysis.reasons, f"still inconclusive after {rec.bakes} bake(s)"]
    return _end(rec, Verdict.FAIL, reasons)


def _end(
    rec: StepRecord, verdict: Verdict, reasons: list[str], fail_fast: bool = False
) -> StepRecord:
    rec.end = time.time()
    rec.verdict = verdict.value
    rec.reasons = list(reasons)
    rec.fail_fast = fail_fast
    return rec
