"""Per-request router records → the counts the canary analysis reads (local backend).

Every keyed request the candidate answers also gets stable's answer (served to a client at
some point, or shadowed by the router). The stable model does not change during the
rollout, so its answer to a key holds whenever it was given: every distinct key the
candidate answered in the window and stable answered at any time is one paired comparison
on a common scale (top-1 answers, checked against the request's reference answer when it
carries one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pairflow.stages.deploy.analysis import Record
from pairflow.stages.deploy.counts import (
    FINE_LATENCY_BOUNDS,
    ArmCounts,
    PairedQuality,
    WindowCounts,
)


def arm_counts(records: Sequence[Record], backend: str, start: float, end: float) -> ArmCounts:
    """The ``backend``'s records with ``start <= t < end`` as counts."""
    sel = [r for r in records if r.backend == backend and start <= r.t < end]
    ok = [r.latency_s for r in sel if r.ok]
    return ArmCounts.from_samples(len(sel), len(sel) - len(ok), ok, FINE_LATENCY_BOUNDS)


def paired_quality(
    records: Sequence[Record],
    stable: str,
    candidate: str,
    start: float,
    end: float,
    stable_answers: Mapping[str, str] | None = None,
) -> PairedQuality | None:
    """Keys the candidate answered in the window and stable answered at any time
    (``stable_answers``: stable's answers known besides the records, e.g. shadowed)."""
    cand: dict[str, Record] = {}
    for r in records:
        if (
            r.backend == candidate
            and r.ok
            and r.key
            and r.answer is not None
            and start <= r.t < end
        ):
            cand[r.key] = r
    ref_answers: dict[str, str] = dict(stable_answers or {})
    for r in records:
        if r.backend == stable and r.ok and r.key and r.answer is not None:
            ref_answers.setdefault(r.key, r.answer)
    keys = [k for k in cand if k in ref_answers]
    if not keys:
        return None
    agree = sum(cand[k].answer == ref_answers[k] for k in keys)
    if all(cand[k].reference is not None for k in keys):
        s_only = sum(
            ref_answers[k] == cand[k].reference and cand[k].answer != cand[k].reference
            for k in keys
        )
        c_only = sum(
            cand[k].answer == cand[k].reference and ref_answers[k] != cand[k].reference
            for k in keys
        )
        return PairedQuality(len(keys), agree, s_only, c_only, "labels")
    return PairedQuality.against_stable(len(keys), agree)


def window_counts(
    records: Sequence[Record],
    stable: str,
    candidate: str,
    start: float,
    end: float,
    stable_answers: Mapping[str, str] | None = None,
) -> WindowCounts:
    return WindowCounts(
        arm_counts(records, stable, start, end),
        arm_counts(records, candidate, start, end),
        paired_quality(records, stable, candidate, start, end, stable_answers),
    )
