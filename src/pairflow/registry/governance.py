"""Who may move which alias: the promotion rules, and the library calls deploy uses.

``champion`` is moved only through :func:`promote` / :func:`rollback` (called by the deploy
step and by ``pairflow registry promote|rollback``). Every alias change goes through
:func:`move_alias`, which refuses a version whose gate did not pass (or that registration
left incomplete) and appends the change to the promotion history.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel

from pairflow.registry.client import Registry
from pairflow.registry.history import HistoryEvent, append_event
from pairflow.registry.names import (
    CHALLENGER,
    CHAMPION,
    GATE_PASSED,
    PREVIOUS,
    TAG_APPROVAL,
    TAG_COMPLETE,
    TAG_GATE,
)
from pairflow.registry.retry import GovernanceError, RegistryError

Policy = Literal["auto", "manual"]


class Approval(BaseModel):
    """A reviewer's sign-off, stored as JSON in the version tag ``pairflow.approval``."""

    by: str
    comment: str
    at: str


def approval_of(version: Any) -> Approval | None:
    raw = (version.tags or {}).get(TAG_APPROVAL)
    if not raw:
        return None
    try:
        return Approval.model_validate(json.loads(raw))
    except ValueError:
        return None


def alias_blockers(version: Any, *, require_complete: bool = True) -> list[str]:
    """Why no alias may point at ``version`` (empty: it may).

    ``require_complete=False`` is only for the register step, which sets ``challenger``
    before it marks its own version complete.
    """
    tags = version.tags or {}
    problems = []
    gate = tags.get(TAG_GATE)
    if gate != GATE_PASSED:
        problems.append(f"gate is {gate or 'missing'!s}, not {GATE_PASSED}")
    if require_complete and tags.get(TAG_COMPLETE) != "true":
        problems.append("registration did not complete")
    return problems


def promotion_blockers(version: Any, policy: Policy) -> list[str]:
    """Why ``version`` may not become champion under ``policy`` (empty: it may)."""
    problems = alias_blockers(version)
    if policy == "manual" and approval_of(version) is None:
        problems.append("manual policy: no approval (pairflow registry approve NAME VERSION)")
    return problems


def deploy_blockers(reg: Registry, model_uri: str, policy: Policy) -> list[str]:
    """Why the deploy step must not roll ``models:/NAME/VERSION`` out (empty: it may).

    Deploy calls this before starting a canary; under the manual policy an unapproved
    version is reported here ("no approval ...") and nothing is rolled out.
    """
    version = reg.resolve(model_uri)
    return promotion_blockers(version, policy)


def champion_drift(reg: Registry, name: str, events: list[HistoryEvent]) -> str | None:
    """A warning when ``champion`` differs from what the history says it should be
    (someone moved it outside pairflow), else None."""
    expected = next((e.to for e in reversed(events) if e.alias == CHAMPION), None)
    current = reg.alias_version(name, CHAMPION)
    actual = None if current is None else str(current.version)
    if actual != expected:
        return (
            f"{name}@{CHAMPION} is {actual or 'unset'} but the promotion history says "
            f"{expected or 'unset'}: it was moved outside pairflow"
        )
    return None


def _ref(name: str, version: Any) -> str:
    return f"models:/{name}/{version.version}"


def move_alias(
    reg: Registry,
    name: str,
    alias: str,
    version: Any | None,
    *,
    actor: str,
    kind: str,
    reason: str,
    require_complete: bool = True,
) -> HistoryEvent | None:
    """Point ``alias`` at ``version`` (None: remove it) and record the change.

    Returns the history event, or None when the alias already pointed there.
    """
    current = reg.alias_version(name, alias)
    old = None if current is None else str(current.version)
    new = None if version is None else str(version.version)
    if old == new:
        return None
    if version is not None:
        problems = alias_blockers(version, require_complete=require_complete)
        if problems:
            raise GovernanceError(
                f"{_ref(name, version)}: refusing to set @{alias} ({'; '.join(problems)})"
            )
        reg.call(
            f"set {name}@{alias}",
            lambda: reg.client.set_registered_model_alias(name, alias, new),
        )
    else:
        reg.call(
            f"delete {name}@{alias}",
            lambda: reg.client.delete_registered_model_alias(name, alias),
        )
    return append_event(
        reg,
        name,
        alias=alias,
        from_version=old,
        to_version=new,
        actor=actor,
        kind=kind,
        reason=reason,
    )


class AliasChange(BaseModel):
    """What a promotion or rollback did."""

    name: str
    champion_from: str | None
    champion_to: str | None
    previous: str | None
    events: list[HistoryEvent]


def promote(
    reg: Registry,
    name: str,
    version: str | int,
    *,
    reason: str,
    actor: str,
    policy: Policy,
    kind: str = "promote",
) -> AliasChange:
    """champion ← ``version``; previous ← the old champion; ``challenger`` leaves ``version``
    if it held it. Refused without a passed gate (and, under the manual policy, without an
    approval)."""
    target = reg.model_version(name, version)
    problems = promotion_blockers(target, policy)
    if problems:
        raise GovernanceError(
            f"{_ref(name, target)}: cannot promote to @{CHAMPION} ({'; '.join(problems)})"
        )
    approval = approval_of(target)
    if approval is not None:
        reason = f"{reason} (approved by {approval.by}: {approval.comment or 'no comment'})"
    old = reg.alias_version(name, CHAMPION)
    events: list[HistoryEvent] = []
    replaced = old is not None and str(old.version) != str(target.version)
    if old is not None and replaced and not alias_blockers(old):
        ev = move_alias(reg, name, PREVIOUS, old, actor=actor, kind=kind, reason=reason)
        events += [ev] if ev else []
    ev = move_alias(reg, name, CHAMPION, target, actor=actor, kind=kind, reason=reason)
    events += [ev] if ev else []
    # A champion is no longer a challenger: the alias leaves it, and the history says why.
    challenger = reg.alias_version(name, CHALLENGER)
    if challenger is not None and str(challenger.version) == str(target.version):
        ev = move_alias(
            reg,
            name,
            CHALLENGER,
            None,
            actor=actor,
            kind=kind,
            reason=f"v{target.version} became @{CHAMPION}: {reason}",
        )
        events += [ev] if ev else []
    prev = reg.alias_version(name, PREVIOUS)
    return AliasChange(
        name=name,
        champion_from=None if old is None else str(old.version),
        champion_to=str(target.version),
        previous=None if prev is None else str(prev.version),
        events=events,
    )


def rollback(
    reg: Registry, name: str, *, reason: str, actor: str, kind: str = "rollback"
) -> AliasChange:
    """champion ← previous; the ``previous`` alias is then removed (no flip-flopping back)."""
    prev = reg.alias_version(name, PREVIOUS)
    if prev is None:
        raise GovernanceError(f"{name}: no @{PREVIOUS} version to roll back to")
    old = reg.alias_version(name, CHAMPION)
    events: list[HistoryEvent] = []
    ev = move_alias(reg, name, CHAMPION, prev, actor=actor, kind=kind, reason=reason)
    events += [ev] if ev else []
    ev = move_alias(reg, name, PREVIOUS, None, actor=actor, kind=kind, reason=reason)
    events += [ev] if ev else []
    return AliasChange(
        name=name,
        champion_from=None if old is None else str(old.version),
        champion_to=str(prev.version),
        previous=None,
        events=events,
    )


def approve(reg: Registry, name: str, version: str | int, *, by: str, comment: str) -> Approval:
    """Record a reviewer's approval on the version (tag ``pairflow.approval``)."""
    if not by.strip():
        raise RegistryError("approve: --by must name the reviewer")
    target = reg.model_version(name, version)
    problems = alias_blockers(target)
    if problems:
        raise GovernanceError(f"{_ref(name, target)}: cannot approve ({'; '.join(problems)})")
    approval = Approval(
        by=by.strip(), comment=comment, at=datetime.now(UTC).isoformat(timespec="seconds")
    )
    reg.call(
        f"tag {name}/{target.version}",
        lambda: reg.client.set_model_version_tag(
            name, str(target.version), TAG_APPROVAL, approval.model_dump_json()
        ),
    )
    return approval
