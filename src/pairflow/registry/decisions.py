"""Decision explanations: every gate and canary decision with its numbers, as table rows.

Inputs are the recorded decision dicts, never recomputed:

- the evaluate gate (:class:`~pairflow.metrics.Gate`, the evaluate report's
  ``EvaluateMetrics.gate``, logged as ``evaluate/gate.json`` on the
  pipeline run): its ``checks`` (floors against chance with a lower confidence bound,
  non-finite outputs, non-inferiority intervals, drift);
- the deploy report (``deploy/report-<decision>.json`` on the version's run, and the compact
  :func:`canary_records` in the ``pairflow.deploy.numbers`` version tag): per step and metric
  the test, statistic, Holm-adjusted p-value or interval, sample sizes, the sample the test
  needed for its power at the minimum effect, the level and the verdict.

:func:`decisions_markdown` renders both for ``pairflow registry show`` and the model card.
"""

from __future__ import annotations

import json
import math
import tempfile
from typing import Any

from pairflow.metrics import DeployMetrics, Gate

GATE_HEADER = ["check", "metric", "value", "interval / bound", "n", "threshold", "result"]
CANARY_HEADER = [
    "step",
    "metric",
    "test",
    "stable",
    "candidate",
    "statistic",
    "p (adj.)",
    "n c/s",
    "needed c/s (power)",
    "min effect",
    "level",
    "result",
]


def _f(value: Any, fmt: str = ".4g") -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return "—" if isinstance(value, float) and not math.isfinite(value) else format(value, fmt)
    return str(value)


def _interval(pair: Any) -> str:
    if isinstance(pair, list | tuple) and len(pair) == 2:
        return f"[{_f(pair[0])}, {_f(pair[1])}]"
    return "—"


def gate_rows(gate: Gate | dict[str, Any]) -> list[list[str]]:
    """One row per recorded gate check (a check's keys depend on its kind: read per kind)."""
    recorded = gate if isinstance(gate, Gate) else Gate.model_validate(gate)
    rows: list[list[str]] = []
    for chk in recorded.checks:
        kind = str(chk.get("check", ""))
        result = "PASS" if chk.get("passed") else "FAIL"
        conf = chk.get("confidence")
        pct = f" ({round(100 * float(conf))}%)" if isinstance(conf, int | float) else ""
        if kind == "floor":
            bound = f"lower {_f(chk.get('lower_bound'))}{pct}"
            threshold = (
                f">= {_f(chk.get('threshold'))} ({chk.get('threshold_source', '')}); chance "
                f"{_f(chk.get('chance'))} ({chk.get('chance_note', '')})"
            )
        elif kind == "non_inferiority":
            bound = f"{_interval(chk.get('interval'))}{pct}"
            threshold = f"CI low >= {_f(chk.get('threshold'))}"
        elif kind == "finite":
            bound = ", ".join(str(r) for r in (chk.get("rows") or [])[:5]) or "—"
            threshold = "0 non-finite rows"
        elif kind == "report":
            bound = f"lower {_f(chk.get('lower_bound'))}"
            threshold = f"reported vs chance {_f(chk.get('chance'))} (not gated)"
            result = "INFO"
        elif kind == "drift":
            bound, threshold = "—", f"policy {chk.get('policy')}"
            result = "SKIP" if chk.get("value") is None else result
        elif kind == "latency":
            rows.append(
                [
                    kind,
                    f"p50 ms at batch {chk.get('batch_size')}",
                    f"{_f(chk.get('candidate_p50_ms'))} (fp32 candidate)",
                    f"champion {chk.get('champion_variant')} {_f(chk.get('champion_p50_ms'))}"
                    f" ({_f(chk.get('ratio'))}x)",
                    _f(chk.get("repeats")),
                    "reported; the budget is enforced at compress",
                    "INFO",
                ]
            )
            continue
        else:
            bound, threshold = "—", _f(chk.get("threshold"))
        rows.append(
            [
                kind,
                str(chk.get("metric", "—")),
                _f(chk.get("value")),
                bound,
                _f(chk.get("n")),
                threshold,
                result,
            ]
        )
    return rows


def canary_records(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Compact per-step, per-metric numbers of a deploy report (for a version tag)."""
    out: list[dict[str, Any]] = []
    for step in report.get("steps") or []:
        for m in step.get("metrics") or []:
            detail = m.get("detail") or {}
            out.append(
                {
                    "weight": step.get("weight"),
                    "verdict": step.get("verdict"),
                    "metric": m.get("metric"),
                    "test": m.get("test"),
                    "stable": m.get("stable"),
                    "candidate": m.get("candidate"),
                    "statistic": m.get("statistic"),
                    "p": m.get("p_adjusted", m.get("p_value")),
                    "interval": detail.get("interval"),
                    "n": [m.get("n_candidate"), m.get("n_stable")],
                    "needed": [m.get("required_candidate"), m.get("required_stable")],
                    "power": m.get("power"),
                    "min_effect": m.get("min_effect"),
                    "level": m.get("level"),
                    "regression": m.get("regression"),
                    "powered": m.get("powered"),
                }
            )
    return out


def canary_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    """Table rows of :func:`canary_records` output."""
    rows: list[list[str]] = []
    for r in records:
        n_c, n_s = ([*list(r.get("n") or []), None, None])[:2]
        need_c, need_s = ([*list(r.get("needed") or []), None, None])[:2]
        p = _f(r.get("p"), ".2g") if r.get("interval") is None else _interval(r.get("interval"))
        result = (
            "regression" if r.get("regression") else ("ok" if r.get("powered") else "underpowered")
        )
        weight = r.get("weight")
        rows.append(
            [
                f"{weight}%" if weight is not None else "—",
                str(r.get("metric", "—")),
                str(r.get("test", "—")),
                _f(r.get("stable")),
                _f(r.get("candidate")),
                _f(r.get("statistic")),
                p,
                f"{_f(n_c)}/{_f(n_s)}",
                f"{_f(need_c)}/{_f(need_s)} ({_f(r.get('power'))})",
                _f(r.get("min_effect")),
                _f(r.get("level"), ".3g"),
                f"{result}; step {r.get('verdict')}",
            ]
        )
    return rows


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    def esc(cell: str) -> str:
        return cell.replace("|", "/").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(c) for c in row) + " |" for row in rows]
    return lines


def decisions_markdown(
    gate: dict[str, Any] | None,
    deploy: dict[str, Any] | None = None,
    canary: list[dict[str, Any]] | None = None,
) -> str:
    """Markdown of the recorded decisions: the gate's checks, then the canary's numbers
    (``canary`` rows from a tag, else derived from the ``deploy`` report)."""
    lines: list[str] = ["### Gate decision", ""]
    recorded = Gate.model_validate(gate) if gate else None
    if recorded is not None and recorded.checks:
        verdict = "passed" if recorded.passed else "failed"
        lines += [f"**{verdict}**", "", *table(GATE_HEADER, gate_rows(recorded))]
    else:
        lines.append("_no gate checks recorded_")
    lines += ["", "### Deploy decision", ""]
    records = canary if canary is not None else canary_records(deploy or {})
    if deploy:
        decided = DeployMetrics.model_validate(deploy)
        mode = f" ({decided.mode})" if decided.mode else ""
        lines.append(f"**{'unknown' if decided.decision is None else decided.decision}**{mode}")
        lines += [f"- {r}" for r in decided.reasons[:6]]
        lines.append("")
    if records:
        lines += table(CANARY_HEADER, canary_rows(records))
    elif not deploy:
        lines.append("_no deploy decision recorded_")
    return "\n".join(lines) + "\n"


TAG_NUMBERS = "pairflow.deploy.numbers"


def version_decisions(client: Any, name: str, version: str) -> str:
    """:func:`decisions_markdown` for a registered version: the gate from its run's
    ``evaluate/gate.json``, the canary from its deploy tags (decision, reasons, numbers)."""

    mv = client.get_model_version(name, version)
    tags = dict(mv.tags or {})
    gate: dict[str, Any] | None = None
    if mv.run_id:
        with tempfile.TemporaryDirectory(prefix="pairflow-gate-") as tmp:
            try:
                path = client.download_artifacts(mv.run_id, "evaluate/gate.json", tmp)
            except Exception as exc:  # noqa: BLE001 - MLflow raises several kinds for "absent"
                note = f"no evaluate/gate.json on run {mv.run_id}: {exc}"
                gate = {"passed": False, "checks": [], "note": note}
            else:
                with open(path) as fh:
                    gate = json.load(fh)
    deploy: dict[str, Any] | None = None
    canary: list[dict[str, Any]] | None = None
    if "pairflow.deploy.decision" in tags:
        deploy = {
            "decision": tags["pairflow.deploy.decision"],
            "reasons": _json_list(tags.get("pairflow.deploy.reasons")),
        }
        canary = _json_list(tags.get(TAG_NUMBERS))
    return decisions_markdown(gate, deploy, canary)


def _json_list(text: str | None) -> list[Any]:

    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return [text]
    return value if isinstance(value, list) else [value]
