"""Candidate and champion of different model kinds (``train.model`` switched between runs).

A CLIP answers ``embed`` / ``score`` (and zero-shot ``classify`` against label prompts); a
classifier answers ``classify`` with its own fusion head and labels. Promoting a candidate of
the other kind would change what the served model answers under the same registered name, so
the gate refuses it with a reason that says how to go on (a separate ``register.model_name``
for the new kind, or an explicit promotion). The metrics both kinds support — retrieval recall
of the towers and zero-shot accuracy — are still measured against the champion and reported,
so the refusal records its numbers; the classifier-only metrics (accuracy, macro-F1, ECE) are
not compared across kinds.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pairflow.models.formats import META_FILE
from pairflow.models.open import open_model
from pairflow.stages.evaluate.gate import GateDecision

if TYPE_CHECKING:
    from pairflow.models.clip import LoadedClip
    from pairflow.models.trained import TrainedModel


def model_kind(clip: LoadedClip) -> str:
    """``classifier`` or ``clip`` from the artifact's ``pairflow_model.json``; a plain CLIP
    directory (no metadata, e.g. a base model or a filter model) is a ``clip``."""

    meta = clip.path / META_FILE if clip.path is not None else None
    if meta is None or not meta.is_file():
        return "clip"
    kind = json.loads(meta.read_text()).get("kind", "clip")
    return str(kind)


def load_champion(
    uri: str, tracking_uri: str | None
) -> tuple[str, LoadedClip, TrainedModel | None]:
    """(kind, towers, the trained classifier when it is one) of the champion at ``uri`` (its
    Hugging Face directory: ``open_model(uri, variant="torch")``)."""
    opened = open_model(uri, variant="torch", device=None, tracking_uri=tracking_uri)
    kind = model_kind(opened.clip)
    if kind != "classifier":
        return kind, opened.clip, None
    return kind, opened.clip, opened.trained


def kind_check(candidate: str, champion: str | None, champion_label: str) -> dict[str, Any]:
    """The gate check comparing the two kinds (``passed`` False when they differ)."""
    check: dict[str, Any] = {
        "check": "model_kind",
        "candidate": candidate,
        "champion": champion,
        "passed": champion is None or champion == candidate,
    }
    if not check["passed"]:
        check["reason"] = (
            f"FAIL model kind: the candidate is a {candidate} but the champion "
            f"{champion_label} is a {champion}; promoting it would change what the served "
            f"model answers ({_answers(candidate)} instead of {_answers(str(champion))}). "
            "Only the metrics both kinds support were compared. Register the "
            f"{candidate} under its own register.model_name, or promote it explicitly "
            "(pairflow registry promote)"
        )
    return check


def with_kind_check(
    gate: GateDecision, candidate: str, champion: str | None, champion_label: str
) -> GateDecision:
    """``gate`` with the model-kind check added; refused when the kinds differ."""
    if champion is None:
        return gate
    check = kind_check(candidate, champion, champion_label)
    if check["passed"]:
        return GateDecision(gate.passed, gate.enforced, gate.reasons, [*gate.checks, check])
    return GateDecision(
        passed=False,
        enforced=gate.enforced,
        reasons=[*gate.reasons, str(check["reason"])],
        checks=[*gate.checks, check],
    )


def _answers(kind: str) -> str:
    return "classify with its own labels" if kind == "classifier" else "embed/score"
