"""The registry side of a rollout: which versions are compared, and the decision recorded.

Alias moves go through :mod:`pairflow.registry.governance` (``promote``: champion ←
candidate, previous ← old champion, with the promotion rules and audit history). A rollback
moves no alias: the decision, reasons and the full step report are recorded on the candidate
version (tags ``pairflow.deploy.*`` and ``deploy/report.json`` in its run's artifacts), and an
event of kind ``canary_rollback`` is appended to the model's promotion history.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from pairflow.errors import PairflowError
from pairflow.registry.card import with_canary
from pairflow.registry.decisions import canary_records
from pairflow.registry.governance import promote as registry_promote
from pairflow.registry.governance import promotion_blockers as blockers
from pairflow.registry.history import append_event
from pairflow.registry.retry import RegistryError

log = logging.getLogger("pairflow.stages.deploy.aliases")

TAG_DECISION = "pairflow.deploy.decision"
TAG_REASONS = "pairflow.deploy.reasons"
TAG_STEPS = "pairflow.deploy.steps"
TAG_KFP_RUN = "pairflow.deploy.kfp_run_id"
TAG_NUMBERS = "pairflow.deploy.numbers"
ACTOR = "pairflow-deploy"
MAX_TAG_CHARS = 5000


class DeployTargetError(PairflowError):
    """A model URI deploy cannot resolve to a registered version."""


@dataclass(frozen=True)
class Rollout:
    """The registered model and the two versions a canary compares."""

    name: str
    candidate: str
    stable: str | None

    def uri(self, version: str) -> str:
        return f"models:/{self.name}/{version}"


def parse_model_uri(model_uri: str) -> tuple[str, str]:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` → (name, version-or-@alias)."""
    ref = model_uri.removeprefix("models:/")
    if not model_uri.startswith("models:/") or not ref:
        raise DeployTargetError(
            f"model URI {model_uri!r}: deploy needs a registered version (models:/NAME/VERSION)"
        )
    if "@" in ref:
        name, alias = ref.split("@", 1)
        return name, "@" + alias
    name, _, version = ref.partition("/")
    if not version.isdigit():
        raise DeployTargetError(f"model URI {model_uri!r}: version must be a number")
    return name, version


def resolve_rollout(reg: Any, model_uri: str, champion_alias: str) -> Rollout:
    """The candidate version behind ``model_uri`` and the current champion (if any)."""

    name, ref = parse_model_uri(model_uri)
    try:
        if ref.startswith("@"):
            found = reg.alias_version(name, ref[1:])
            if found is None:
                raise DeployTargetError(f"model URI {model_uri!r}: alias {ref} is not set")
            candidate = str(found.version)
        else:
            candidate = str(reg.model_version(name, ref).version)
    except RegistryError as exc:
        raise DeployTargetError(f"model URI {model_uri!r}: {exc}") from exc
    champ = reg.alias_version(name, champion_alias)
    stable = None if champ is None else str(champ.version)
    return Rollout(name=name, candidate=candidate, stable=stable)


def promotion_blockers(reg: Any, rollout: Rollout, policy: str) -> list[str]:
    """Why the candidate could not be promoted whatever the canary says (gate, approval)."""

    return list(blockers(reg.model_version(rollout.name, rollout.candidate), policy))  # type: ignore[arg-type]


def promote(reg: Any, rollout: Rollout, policy: str, reason: str) -> dict[str, Any]:
    """champion ← candidate, previous ← old champion (registry governance rules apply)."""

    change = registry_promote(
        reg,
        rollout.name,
        rollout.candidate,
        reason=reason,
        actor=ACTOR,
        policy=policy,  # type: ignore[arg-type]
        kind="canary_promote",
    )
    return {
        "champion_from": change.champion_from,
        "champion_to": change.champion_to,
        "previous": change.previous,
    }


def record_rollback_event(reg: Any, rollout: Rollout, reason: str) -> None:
    """Append a ``canary_rollback`` event (champion unchanged) to the promotion history."""

    append_event(
        reg,
        rollout.name,
        alias="champion",
        from_version=rollout.stable,
        to_version=rollout.stable,
        actor=ACTOR,
        kind="canary_rollback",
        reason=f"candidate v{rollout.candidate} rolled back: {reason}",
    )


def _numbers_tag(report: dict[str, Any]) -> str:
    """The canary's per-step, per-metric numbers as JSON that fits a tag (the latest steps
    are kept when all do not fit; the full report is logged on the run)."""

    rows = canary_records(report)
    text = json.dumps(rows)
    while len(text) > MAX_TAG_CHARS and rows:
        rows = rows[1:]
        text = json.dumps(rows)
    return text


def record_decision(
    reg: Any,
    rollout: Rollout,
    decision: str,
    reasons: list[str],
    report: dict[str, Any],
    kfp_run_id: str = "",
) -> None:
    """Tag the candidate version with the decision, add the canary outcome to its model card
    and log the full report to its run."""
    client = reg.client
    version = rollout.candidate
    steps = [
        {"weight": s.get("weight"), "verdict": s.get("verdict")} for s in report.get("steps", [])
    ]
    tags = {
        TAG_DECISION: decision,
        TAG_REASONS: json.dumps(reasons)[:MAX_TAG_CHARS],
        TAG_STEPS: json.dumps(steps)[:MAX_TAG_CHARS],
        TAG_NUMBERS: _numbers_tag(report),
    }
    if kfp_run_id:
        tags[TAG_KFP_RUN] = kfp_run_id
    for key, value in tags.items():
        reg.call(
            f"tag {rollout.name}/{version}",
            lambda k=key, v=value: client.set_model_version_tag(rollout.name, version, k, v),
        )
    mv = reg.model_version(rollout.name, version)
    # The model card (the version's description) gets its canary section, before lineage.

    # the full steps: the card's canary table shows each test's numbers
    card = with_canary(mv.description or "", decision, reasons, list(report.get("steps") or []))
    reg.call(
        f"card of {rollout.name}/{version}",
        lambda: client.update_model_version(rollout.name, version, description=card),
    )
    run_id = mv.run_id
    if run_id:
        reg.call(
            "log deploy report",
            lambda: client.log_dict(run_id, report, f"deploy/report-{decision}.json"),
        )
    else:
        log.warning(
            "version %s/%s has no run: report not logged as artifact", rollout.name, version
        )
