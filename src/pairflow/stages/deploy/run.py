"""One deploy: resolve the versions, run the canary on the configured backend, record it.

Outcomes (``decision`` in the report): ``promoted``, ``rolled_back``, ``promoted_initial``
(no champion yet and ``first_deploy: promote``, an explicit opt-out of any bake),
``blocked`` (promotion rules refuse the version before any traffic), ``already_champion``,
``not_deployed`` (nothing registered), ``disabled``. With no champion and the default
``first_deploy: smoke`` the candidate is baked alone against the absolute SLOs
(``mode: smoke``) and is ``promoted`` or ``rolled_back`` on them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pairflow.config import PairflowConfig
from pairflow.registry.client import Registry
from pairflow.stages.deploy import aliases
from pairflow.stages.deploy.aliases import Rollout
from pairflow.stages.deploy.backend import CanaryBackend
from pairflow.stages.deploy.controller import (
    PROMOTED,
    ROLLED_BACK,
    CanaryResult,
    StepRecord,
    run_canary,
    run_smoke,
)

log = logging.getLogger("pairflow.stages.deploy")

BackendFactory = Callable[[Rollout, PairflowConfig, str, Path], CanaryBackend]


@dataclass
class DeployOutcome:
    decision: str
    reasons: list[str]
    metrics: dict[str, Any] = field(default_factory=dict)


def replay_task(model_kind: str) -> str:
    """The replayed request shape for a model kind: top-1 label for a classifier, top-1
    caption among candidates for CLIP."""
    return "classify" if model_kind == "classifier" else "rank"


def default_backend(
    rollout: Rollout, cfg: PairflowConfig, manifest: str, work_dir: Path
) -> CanaryBackend:
    """The configured backend: local processes + router + replayer, or KServe."""
    dcfg = cfg.deploy
    if dcfg.backend == "kserve":
        # lazy: kubernetes (slow to import); only the KServe backend needs it
        from pairflow.stages.deploy.kserve import KServeBackend

        return KServeBackend.from_config(rollout, dcfg)
    # lazy: aiohttp, pandas (slow to import); only this path needs it
    from pairflow.stages.deploy.local import launch_local, launch_single
    from pairflow.stages.deploy.replay import holdout_pairs

    rc = dcfg.replay
    task = rc.task if rc.task != "auto" else replay_task(cfg.train.model)
    pairs = holdout_pairs(manifest, cfg.data.split, rc.image_px, rc.candidates, task, rc.variants)
    tracking = cfg.mlflow.tracking_uri
    if rollout.stable is None:  # the first deploy's smoke bake
        return launch_single(
            rollout.uri(rollout.candidate),
            pairs,
            dcfg,
            work_dir,
            env={"MLFLOW_TRACKING_URI": tracking},
        )
    return launch_local(
        rollout.uri(rollout.stable),
        rollout.uri(rollout.candidate),
        pairs,
        dcfg,
        work_dir,
        env={"MLFLOW_TRACKING_URI": tracking},  # predictors resolve models:/ where deploy does
    )


def run_deploy(
    cfg: PairflowConfig,
    manifest: str,
    model_uri: str,
    work_dir: Path,
    *,
    kfp_run_id: str = "",
    backend_factory: BackendFactory = default_backend,
    on_step: Callable[[StepRecord], None] | None = None,
) -> DeployOutcome:
    """Canary-deploy ``model_uri`` against the champion; promote or roll back; record it."""
    dcfg = cfg.deploy
    if not dcfg.enabled:
        return DeployOutcome("disabled", ["deploy.enabled is false"])
    if not model_uri:
        return DeployOutcome("not_deployed", ["no model version was registered upstream"])
    aliases.parse_model_uri(model_uri)  # a bad URI fails before MLflow is touched

    reg = Registry.from_config(cfg.mlflow)
    rcfg = cfg.register_
    rollout = aliases.resolve_rollout(reg, model_uri, dcfg.alias_champion)
    base: dict[str, Any] = {
        "model": rollout.name,
        "candidate_version": rollout.candidate,
        "stable_version": rollout.stable,
        "backend": dcfg.backend,
        "steps_planned": dcfg.steps,
    }

    def finish(decision: str, reasons: list[str], **extra: Any) -> DeployOutcome:
        metrics = {**base, "decision": decision, "reasons": reasons, **extra}
        aliases.record_decision(reg, rollout, decision, reasons, metrics, kfp_run_id)
        log.info("deploy %s v%s: %s (%s)", rollout.name, rollout.candidate, decision, reasons)
        return DeployOutcome(decision, reasons, metrics)

    blockers = aliases.promotion_blockers(reg, rollout, rcfg.policy)
    if blockers:
        return finish("blocked", [f"promotion rules: {b}" for b in blockers])
    if rollout.stable == rollout.candidate:
        return DeployOutcome("already_champion", ["candidate is already the champion"], base)
    smoke = rollout.stable is None
    if smoke:
        if dcfg.first_deploy == "fail":
            return finish("rolled_back", ["no champion to compare with (first_deploy: fail)"])
        if dcfg.first_deploy == "promote":
            change = aliases.promote(reg, rollout, rcfg.policy, "first version: no champion yet")
            return finish(
                "promoted_initial",
                ["no champion yet: promoted without a canary (first_deploy: promote)"],
                aliases=change,
            )
    result, backend_info = _canary(
        rollout, cfg, manifest, work_dir, backend_factory, on_step, smoke=smoke
    )
    extra: dict[str, Any] = {
        "mode": "smoke" if smoke else "canary",
        "steps": [s.to_json() for s in result.steps],
        **backend_info,
    }
    reason = "; ".join(result.reasons)
    if result.decision == PROMOTED:
        extra["aliases"] = aliases.promote(reg, rollout, rcfg.policy, f"canary passed: {reason}")
    elif smoke:
        extra["aliases"] = {"champion": None, "unchanged": True}
    else:
        aliases.record_rollback_event(reg, rollout, reason)
        extra["aliases"] = {"champion": rollout.stable, "unchanged": True}
    return finish(result.decision, result.reasons, **extra)


def _canary(
    rollout: Rollout,
    cfg: PairflowConfig,
    manifest: str,
    work_dir: Path,
    factory: BackendFactory,
    on_step: Callable[[StepRecord], None] | None,
    *,
    smoke: bool = False,
) -> tuple[CanaryResult, dict[str, Any]]:
    # lazy: aiohttp, pandas (slow to import); only this path needs it
    from pairflow.stages.deploy.local import PredictorStartError

    start = time.time()
    try:
        backend = factory(rollout, cfg, manifest, work_dir)
    except PredictorStartError as exc:
        if exc.role != "candidate":
            raise
        return CanaryResult(ROLLED_BACK, [f"candidate did not start: {exc}"], []), {}
    try:
        backend.start()
        run = run_smoke if smoke else run_canary
        result = run(backend, cfg.deploy, on_step=on_step)
        info = dict(backend.describe())
    except BaseException:
        backend.rollback()
        raise
    finally:
        backend.close()
    info["canary_seconds"] = round(time.time() - start, 2)
    return result, info
