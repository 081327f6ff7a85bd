"""The deploy report as Markdown: decision, reasons and one row per canary step."""

from __future__ import annotations

from typing import Any

from pairflow.metrics import DeployMetrics
from pairflow.report import StageReport
from pairflow.summary import report_markdown


def _cell(value: Any, fmt: str = "{:.4g}") -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return fmt.format(value)
    return str(value)


def steps_table(steps: list[dict[str, Any]]) -> list[str]:
    """One row per step: traffic, requests, errors, p95, paired agreement, p-values, the
    sample each test needed for its power, verdict."""
    lines = [
        "| weight | verdict | requests s/c | errors s/c | p95 ms s/c | agree/compared "
        "| p err | p lat | p quality | needed c (err/lat/q) | reasons |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for st in steps:
        s, c = st.get("stable", {}), st.get("candidate", {})
        q = st.get("quality") or {}
        p = {m["metric"]: m.get("p_adjusted") for m in st.get("metrics", [])}
        need = {m["metric"]: m.get("required_candidate") for m in st.get("metrics", [])}
        reasons = "; ".join(st.get("reasons", [])).replace("|", "/")
        lines.append(
            f"| {st['weight']}% | **{st['verdict']}** "
            f"| {_cell(s.get('requests'))}/{_cell(c.get('requests'))} "
            f"| {_cell(s.get('errors'))}/{_cell(c.get('errors'))} "
            f"| {_cell(s.get('latency_p95_ms'))}/{_cell(c.get('latency_p95_ms'))} "
            f"| {_cell(q.get('agree'))}/{_cell(q.get('compared'))} "
            f"| {_cell(p.get('error_rate'), '{:.2g}')} | {_cell(p.get('latency_p95'), '{:.2g}')} "
            f"| {_cell(p.get('quality'), '{:.2g}')} "
            f"| {_cell(need.get('error_rate'))}/{_cell(need.get('latency_p95'))}"
            f"/{_cell(need.get('quality'))} | {reasons} |"
        )
    return lines


def deploy_markdown(report: StageReport) -> str:
    """Decision and reasons first, then the step table, then the generic stage summary."""
    m = report.metrics_as(DeployMetrics)
    lines = [
        f"# deploy: **{'unknown' if m.decision is None else m.decision}**",
        "",
        f"model `{m.model}` candidate v{m.candidate_version} vs stable "
        f"v{m.stable_version} on backend `{m.backend}`",
        "",
    ]
    lines += [f"- {r}" for r in m.reasons]
    if m.steps:
        lines += [
            "",
            "p-values are Holm-adjusted; s = stable, c = candidate; 'needed' is the candidate "
            "sample each test needs for its power at the minimum effect.",
            "",
        ]
        lines += steps_table(m.steps)
    return "\n".join(lines) + "\n\n" + report_markdown(report)
