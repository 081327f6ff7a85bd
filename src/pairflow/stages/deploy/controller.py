"""The canary controller: steps, bakes, interim and final analyses, rollback or promotion.

For every step below 100% it sets the candidate's weight, bakes while looking at the data
every ``check_interval_s`` (an interim look fails fast on a clear regression or a dead
candidate), then judges the step on the whole post-warm-up window. A window below the
sample size its tests need for the configured power is inconclusive: the bake is extended
(``analysis.max_extensions`` times, each long enough for the missing share at the observed
rate), then the step fails; it never passes. The step at 100% is the promotion itself: at
100% no stable traffic exists to compare against in the same window.

:func:`run_smoke` is the first deploy's bake: the candidate alone, against absolute SLOs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pairflow.stages.deploy.analysis import StepAnalysis, Verdict, analyze_step
from pairflow.stages.deploy.backend import CanaryBackend, MetricsUnavailable
from pairflow.stages.deploy.counts import WindowCounts
from pairflow.stages.deploy.settings import DeployConfig
from pairflow.stages.deploy.smoke import analyze_smoke

Clock = Callable[[], float]
Judge = Callable[[WindowCounts, bool], StepAnalysis]

log = logging.getLogger("pairflow.stages.deploy.controller")

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
    clock: Clock = time.time,
) -> CanaryResult:
    """Roll the candidate out through ``cfg.steps``; roll back on the first failed step."""
    steps: list[StepRecord] = []
    analysed = len([w for w in cfg.steps if w < 100])
    for weight in cfg.steps:
        if weight == 100:
            break

        def judge(w: WindowCounts, interim: bool, weight: int = weight) -> StepAnalysis:
            return analyze_step(
                w,
                cfg.analysis,
                weight=weight,
                analysed_steps=analysed,
                interim=interim,
                min_requests=cfg.min_requests,
            )

        rec = _run_step(backend, cfg, weight, judge, clock)
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


def run_smoke(
    backend: CanaryBackend,
    cfg: DeployConfig,
    *,
    on_step: Callable[[StepRecord], None] | None = None,
    clock: Clock = time.time,
) -> CanaryResult:
    """First deploy: all traffic to the candidate, judged against the absolute SLOs."""

    def judge(w: WindowCounts, interim: bool) -> StepAnalysis:
        look = analyze_smoke(w.candidate, cfg.analysis)
        if interim and look.verdict == Verdict.PASS:
            return StepAnalysis(Verdict.INCONCLUSIVE, look.counts, look.metrics, ["interim"])
        return look

    rec = _run_step(backend, cfg, 100, judge, clock)
    if on_step is not None:
        on_step(rec)
    if rec.verdict != Verdict.PASS:
        backend.rollback()
        return CanaryResult(ROLLED_BACK, [f"smoke bake: {r}" for r in rec.reasons], [rec])
    backend.promote()
    return CanaryResult(PROMOTED, [f"smoke bake met the SLOs: {'; '.join(rec.reasons)}"], [rec])


def _run_step(
    backend: CanaryBackend, cfg: DeployConfig, weight: int, judge: Judge, clock: Clock
) -> StepRecord:
    backend.set_weight(weight)
    rec = StepRecord(weight=weight, start=clock())
    try:
        return _bake_and_judge(backend, cfg, rec, judge, clock)
    except MetricsUnavailable as exc:
        return _end(rec, Verdict.FAIL, [f"metrics unavailable: {exc}"], clock)


def _shortfall(analysis: StepAnalysis) -> float:
    """How many times the current window the largest unmet sample-size requirement is."""
    worst = 1.0
    for m in analysis.metrics:
        for have, need in ((m.n_candidate, m.required_candidate), (m.n_stable, m.required_stable)):
            if need > have:
                worst = max(worst, need / max(have, 1))
    return worst


def _bake_and_judge(
    backend: CanaryBackend, cfg: DeployConfig, rec: StepRecord, judge: Judge, clock: Clock
) -> StepRecord:
    weight = rec.weight
    acfg = cfg.analysis
    analysed_from = rec.start + acfg.warmup_s
    budget = cfg.bake_s + acfg.warmup_s
    for extension in range(acfg.max_extensions + 1):
        deadline = clock() + budget
        rec.bakes += 1
        while (left := deadline - clock()) > 0:
            backend.bake(min(cfg.check_interval_s, left))
            dead = backend.health()
            if dead is not None:
                reasons = [f"candidate unhealthy: {dead}"]
                return _end(rec, Verdict.FAIL, reasons, clock, fail_fast=True)
            if deadline - clock() <= 0:
                break
            look = judge(backend.window(analysed_from, clock()), True)
            rec.interim_looks += 1
            if look.verdict == Verdict.FAIL:
                rec.analysis = look
                return _end(rec, Verdict.FAIL, look.reasons, clock, fail_fast=True)
        rec.analysis = judge(backend.window(analysed_from, clock()), False)
        verdict = rec.analysis.verdict
        if verdict != Verdict.INCONCLUSIVE:
            return _end(rec, verdict, rec.analysis.reasons, clock)
        if acfg.inconclusive == "fail" or extension == acfg.max_extensions:
            break
        elapsed = clock() - analysed_from
        # long enough for the missing share at the observed rate (10% margin), >= one bake
        budget = min(
            max(cfg.bake_s, elapsed * (_shortfall(rec.analysis) - 1) * 1.1),
            cfg.max_bake_s,
        )
        log.info(
            "step %d%% inconclusive (%s); extending the bake by %.1f s",
            weight,
            rec.analysis.reasons,
            budget,
        )
    assert rec.analysis is not None
    reasons = [*rec.analysis.reasons, f"still inconclusive after {rec.bakes} bake(s)"]
    return _end(rec, Verdict.FAIL, reasons, clock)


def _end(
    rec: StepRecord,
    verdict: Verdict,
    reasons: list[str],
    clock: Clock,
    fail_fast: bool = False,
) -> StepRecord:
    rec.end = clock()
    rec.verdict = verdict.value
    rec.reasons = list(reasons)
    rec.fail_fast = fail_fast
    return rec
