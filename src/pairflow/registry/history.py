"""Promotion history: an append-only audit record of alias changes, kept with the model.

Each event is one registered-model tag ``pairflow.history.<ns timestamp>-<random>`` holding
JSON (who, when, alias, from which version to which, why). Appending writes a new key and
never rewrites an old one, so it works the same on sqlite and a remote server, and two
concurrent appends cannot lose each other (a single JSON document would need a
read-modify-write). Keys sort by time; the random suffix breaks ties.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from pairflow.registry.client import Registry
from pairflow.registry.names import HISTORY_TAG_PREFIX

MAX_REASON_CHARS = 2000


class HistoryEvent(BaseModel):
    """One alias change (``to`` None: alias removed; ``from_`` None: alias was unset)."""

    at: str
    alias: str
    from_: str | None
    to: str | None
    actor: str
    kind: str
    reason: str

    def to_json(self) -> str:
        data = self.model_dump()
        data["from"] = data.pop("from_")
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HistoryEvent:
        data: dict[str, Any] = json.loads(text)
        data["from_"] = data.pop("from", None)
        return cls.model_validate(data)


def append_event(
    reg: Registry,
    name: str,
    *,
    alias: str,
    from_version: str | None,
    to_version: str | None,
    actor: str,
    kind: str,
    reason: str,
) -> HistoryEvent:
    """Append one event to ``name``'s history (a new tag; earlier events are untouched)."""
    event = HistoryEvent(
        at=datetime.now(UTC).isoformat(timespec="milliseconds"),
        alias=alias,
        from_=from_version,
        to=to_version,
        actor=actor or "unknown",
        kind=kind,
        reason=reason[:MAX_REASON_CHARS],
    )
    key = f"{HISTORY_TAG_PREFIX}{time.time_ns():020d}-{secrets.token_hex(4)}"
    reg.call(
        f"append history of {name}",
        lambda: reg.client.set_registered_model_tag(name, key, event.to_json()),
    )
    return event


def read_history(reg: Registry, name: str) -> list[HistoryEvent]:
    """All events of ``name``, oldest first."""
    tags: dict[str, str] = reg.registered_model(name).tags or {}
    keys = sorted(k for k in tags if k.startswith(HISTORY_TAG_PREFIX))
    return [HistoryEvent.from_json(tags[k]) for k in keys]
