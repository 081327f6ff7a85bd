"""Markdown summary of an evaluation (KFP Markdown artifact and CLI output)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pairflow.stages.evaluate.run import EvaluateResult


def _f(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4f}"


def result_markdown(result: EvaluateResult) -> str:
    """Gate decision and reasons, metrics side by side with the champion, deltas, drift."""
    verdict = "PASSED" if result.gate.passed else "FAILED"
    lines = [
        f"## evaluate — gate **{verdict}**",
        "",
        f"{result.kind} model `{result.model_ref}` on {result.evaluated_rows} held-out rows "
        f"({result.holdout_rows} held out of {result.rows}).",
        "",
        "### Gate",
        "",
        *(f"- {r}" for r in result.gate.reasons),
        "",
        "### Metrics",
        "",
        "| metric | candidate | champion |",
        "|---|---:|---:|",
    ]
    champ = result.champion.scalars if result.champion is not None else {}
    for name, value in result.candidate.scalars.items():
        lines.append(f"| {name} | {_f(value)} | {_f(champ.get(name))} |")
    if result.comparisons:
        pct = round(result.comparisons[0].confidence * 100)
        lines += [
            "",
            f"### Candidate − champion (paired bootstrap, {pct}% CI)",
            "",
            "| metric | delta | low | high |",
            "|---|---:|---:|---:|",
        ]
        lines += [
            f"| {c.metric} | {c.delta:+.4f} | {c.low:+.4f} | {c.high:+.4f} |"
            for c in result.comparisons
        ]
    lines += ["", "### Drift", "", *(f"- {r}" for r in result.drift.reasons)]
    return "\n".join(lines) + "\n"
