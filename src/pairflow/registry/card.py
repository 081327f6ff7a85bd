"""The model card: the version description a reviewer decides from (Markdown).

Every section renders from whatever inputs exist; a missing input gives a stated
"not available" line, never an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pairflow.report import StageReport
from pairflow.summary import STAGE_ORDER

NA = "_not available: {}_"
_CI_KEYS = (("ci_low", "ci_high"), ("lo", "hi"), ("lower", "upper"))


@dataclass
class CardInputs:
    model_name: str
    lineage: dict[str, str] = field(default_factory=dict)
    reports: dict[str, StageReport] = field(default_factory=dict)
    evaluate: StageReport | None = None
    variants: list[dict[str, Any]] = field(default_factory=list)
    chosen_variant: str = ""
    intended_use: str = ""
    limitations: list[str] = field(default_factory=list)
    artifacts: list[str] = field(default_factory=list)


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)[:80]
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out


def gate_section(evaluate: StageReport | None) -> list[str]:
    gate = (evaluate.metrics.get("gate") if evaluate else None) or None
    if not isinstance(gate, dict):
        return [NA.format("no evaluate report with a gate decision")]
    verdict = "**passed**" if gate.get("passed") else "**failed**"
    if not gate.get("enforced", True):
        verdict += " (not enforced)"
    lines = [f"Gate: {verdict}"]
    lines += [f"- {r}" for r in gate.get("reasons", []) or []]
    return lines


def stages_section(reports: dict[str, StageReport]) -> list[str]:
    if not reports:
        return [NA.format("no stage reports were given")]
    order = [s for s in STAGE_ORDER if s in reports] + sorted(set(reports) - set(STAGE_ORDER))
    rows = []
    for stage in order:
        rep = reports[stage]
        reasons = ", ".join(
            f"{k}: {v}" for k, v in sorted(rep.rejected.items(), key=lambda kv: -kv[1])
        )
        note = "" if rep.implemented else " (not implemented)"
        rows.append([stage + note, rep.rows_in, rep.rows_out, rep.rows_rejected, reasons or "—"])
    return _table(["stage", "rows in", "rows out", "rejected", "reject reasons"], rows)


def _ci(value: dict[str, Any]) -> tuple[Any, Any] | None:
    if isinstance(value.get("ci"), list | tuple) and len(value["ci"]) == 2:
        return value["ci"][0], value["ci"][1]
    for lo, hi in _CI_KEYS:
        if lo in value and hi in value:
            return value[lo], value[hi]
    return None


def metric_rows(data: dict[str, Any], prefix: str = "") -> list[list[Any]]:
    rows: list[list[Any]] = []
    for key, val in sorted(data.items()):
        name = f"{prefix}{key}"
        if key in ("gate", "drift"):
            continue
        if isinstance(val, bool):
            continue
        if isinstance(val, int | float):
            rows.append([name, val, "—"])
        elif isinstance(val, dict):
            ci = _ci(val)
            point = next((val[k] for k in ("value", "delta", "mean", "estimate") if k in val), None)
            if ci is not None and point is not None:
                rows.append([name, point, f"[{cell(ci[0])}, {cell(ci[1])}]"])
            else:
                rows += metric_rows(val, f"{name}.")
    return rows


def evaluation_section(evaluate: StageReport | None) -> list[str]:
    if evaluate is None:
        return [NA.format("no evaluate report")]
    if not evaluate.implemented:
        return [NA.format("evaluate is not implemented yet: nothing was measured")]
    rows = metric_rows(evaluate.metrics)
    if not rows:
        return [NA.format("the evaluate report holds no metrics")]
    return _table(["metric (candidate vs champion)", "value", "95% CI"], rows)


def compression_section(variants: list[dict[str, Any]], chosen: str) -> list[str]:
    if not variants:
        return [NA.format("no compressed variants (the trained model ships as is)")]
    keys: list[str] = []
    for row in variants:
        keys += [k for k in row if k not in keys]
    lines = [f"Chosen variant: **{chosen}**", ""]
    return lines + _table(keys, [[row.get(k, "—") for k in keys] for row in variants])


def drift_section(evaluate: StageReport | None) -> list[str]:
    drift = evaluate.metrics.get("drift") if evaluate else None
    if not isinstance(drift, dict) or not drift:
        return [NA.format("no drift summary in the evaluate report")]
    rows = [[k, v] for k, v in sorted(drift.items()) if not isinstance(v, dict | list)]
    nested = [
        [k, json.dumps(v, sort_keys=True)[:120]]
        for k, v in sorted(drift.items())
        if isinstance(v, dict | list)
    ]
    return _table(["drift", "value"], rows + nested)


def build_model_card(inputs: CardInputs) -> str:
    """The Markdown card for one model version."""
    lines = [f"# {inputs.model_name}", ""]
    if inputs.lineage:
        lines += _table(["lineage", "value"], [[k, v] for k, v in sorted(inputs.lineage.items())])
    else:
        lines.append(NA.format("no lineage facts"))
    sections: list[tuple[str, list[str]]] = [
        ("Gate decision", gate_section(inputs.evaluate)),
        ("Data: rows per stage", stages_section(inputs.reports)),
        ("Evaluation against the champion", evaluation_section(inputs.evaluate)),
        ("Compression", compression_section(inputs.variants, inputs.chosen_variant)),
        ("Drift", drift_section(inputs.evaluate)),
        ("Intended use", [inputs.intended_use or NA.format("not stated in config")]),
        (
            "Limitations",
            [f"- {x}" for x in inputs.limitations] or [NA.format("not stated in config")],
        ),
        (
            "Attached artifacts (on the run)",
            [f"- `{a}`" for a in inputs.artifacts] or [NA.format("none attached")],
        ),
    ]
    for title, body in sections:
        lines += ["", f"## {title}", "", *body]
    return "\n".join(lines) + "\n"
