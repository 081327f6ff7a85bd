"""The model card: the version description a reviewer decides from (Markdown).

Order is the order a reviewer reads, and the first screen holds the decision:

1. the gate verdict and one table of the gated metrics (metric | candidate | champion |
   delta [95% CI] | threshold | result), intervals in their cells;
2. the chosen variant with its size and latency against fp32 and against the champion;
3. the drift verdict with the top drifted columns;
4. the canary outcome, once deploy has run (:func:`with_canary`);
5. lineage, rows per data stage, intended use, limitations;
6. links to the attached JSON that holds every metric (no flattened key dump here).

Every section renders from whatever inputs exist; a missing input gives a stated
"not available" line, never an error.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from pairflow.metrics import EvaluateMetrics, Gate, LatencyBudget, Scores
from pairflow.registry.decisions import CANARY_HEADER, canary_records, canary_rows, table
from pairflow.report import StageReport
from pairflow.summary import STAGE_ORDER, budget_sentence

NA = "_not available: {}_"
CANARY_HEADING = "## Canary"
LINEAGE_HEADING = "## Lineage"
TOP_DRIFTED = 5
_CI_KEYS = (("ci_low", "ci_high"), ("lo", "hi"), ("lower", "upper"), ("low", "high"))


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
    # Where the attached artifacts live (links from the card into the MLflow UI).
    run_id: str = ""
    experiment_id: str = ""
    # The champion's chosen variant (size_bytes, p50_ms_b1, ...), when it has one.
    champion_variant: dict[str, Any] | None = None
    # compress's latency budget against the champion (variants.json selection.latency_budget)
    latency_budget: dict[str, Any] | None = None


def cell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return "—" if not math.isfinite(value) else f"{value:.4g}"
    if value is None:
        return "—"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)[:80]
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return out


def _f(value: Any, fmt: str = ".3f") -> str:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return format(value, fmt)
    return "—"


def _ci(value: dict[str, Any]) -> tuple[Any, Any] | None:
    for key in ("ci", "interval"):
        if isinstance(value.get(key), list | tuple) and len(value[key]) == 2:
            return value[key][0], value[key][1]
    for lo, hi in _CI_KEYS:
        if lo in value and hi in value:
            return value[lo], value[hi]
    return None


def metric_rows(data: dict[str, Any], prefix: str = "") -> list[list[Any]]:
    """Flattened (name, value, CI) rows of a metrics dict: for version tags, not the card."""
    rows: list[list[Any]] = []
    for key, val in sorted(data.items()):
        name = f"{prefix}{key}"
        if key in ("gate", "drift") or isinstance(val, bool):
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


# -- 1. decision ------------------------------------------------------------------------------


def _verdict(gate: Gate) -> str:
    verdict = "PASSED" if gate.passed else "FAILED"
    if not gate.enforced:
        verdict += " (not enforced)"
    return verdict


def _delta_cell(d: dict[str, Any]) -> str:
    ci = _ci(d)
    pct = round(100 * float(d.get("confidence", 0.95)))
    interval = f" [{_f(ci[0], '+.3f')}, {_f(ci[1], '+.3f')}] {pct}%" if ci else ""
    return f"{_f(d.get('delta', d.get('value')), '+.3f')}{interval}"


def _gate_rows(m: EvaluateMetrics) -> list[list[str]]:
    deltas = m.deltas
    champ = m.champion.metrics if m.champion is not None else Scores()
    rows: list[list[str]] = []
    # a check's keys depend on its kind (Gate.checks): read per kind
    for chk in m.gate.checks if m.gate is not None else []:
        kind, metric = chk.get("check"), str(chk.get("metric", ""))
        result = "PASS" if chk.get("passed") else "FAIL"
        if kind == "floor":
            pct = round(100 * float(chk.get("confidence", 0.95)))
            cand = f"{_f(chk.get('value'))} (≥{_f(chk.get('lower_bound'))} at {pct}%)"
            delta = _delta_cell(deltas[metric]) if metric in deltas else "—"
            threshold = f"≥ {_f(chk.get('threshold'))} (chance {_f(chk.get('chance'))})"
            rows.append(
                [f"{metric} (floor)", cand, _f(champ.get(metric)), delta, threshold, result]
            )
        elif kind == "non_inferiority":
            threshold = f"CI low ≥ {_f(chk.get('threshold'), '+.3f')}"
            rows.append(
                [
                    f"{metric} (vs champion)",
                    _f(chk.get("candidate")),
                    _f(chk.get("champion")),
                    _delta_cell(chk),
                    threshold,
                    result,
                ]
            )
        elif kind == "finite":
            bad = f"{chk.get('value')} non-finite of {chk.get('n')}"
            rows.append([metric, bad, "—", "—", "0 non-finite", result])
        elif kind == "drift":
            seen = chk.get("value")
            found = "skipped" if seen is None else ("drift" if seen else "no drift")
            result = result if seen is not None else "SKIP"
            rows.append(["drift", found, "—", "—", f"policy {chk.get('policy')}", result])
        elif kind == "latency":
            rows.append(
                [
                    f"p50 latency ms, batch {chk.get('batch_size')} (fp32, before compress)",
                    _f(chk.get("candidate_p50_ms")),
                    f"{_f(chk.get('champion_p50_ms'))} ({chk.get('champion_variant')})",
                    f"{_f(chk.get('ratio'))}x",
                    "reported; compress enforces the budget",
                    "INFO",
                ]
            )
    return rows


def decision_section(evaluate: StageReport | None) -> list[str]:
    """The gate verdict and the gated-metrics table (the card's first screen)."""
    m = evaluate.metrics_as(EvaluateMetrics) if evaluate is not None else None
    gate = m.gate if m is not None else None
    if m is None or gate is None:
        return [NA.format("no evaluate report with a gate decision")]
    champion = m.champion
    versus = (
        f"candidate vs champion v{champion.version}"
        if champion is not None and champion.version
        else "first run: no champion, gated on absolute minimums"
    )
    rows_n = m.evaluated_rows
    lines = [
        f"**Gate: {_verdict(gate)}** — {versus}"
        + (f"; {rows_n} held-out rows" if rows_n is not None else ""),
        "",
    ]
    rows = _gate_rows(m)
    if rows:
        lines += _table(
            ["metric", "candidate", "champion", "delta [95% CI]", "threshold", "result"], rows
        )
    else:
        lines.append(NA.format("the gate recorded no checks"))
    notes = [r for r in gate.reasons if not r.startswith(("PASS ", "FAIL ", "SKIP ", "WARN "))]
    failing = [r for r in gate.reasons if r.startswith(("FAIL ", "WARN "))]
    for note in [*failing, *notes][:4]:
        lines += ["", f"- {note}"]
    return lines


# -- 2. chosen variant -------------------------------------------------------------------------


def _ratio(a: Any, b: Any, fmt: str = ".2f") -> str:
    if isinstance(a, int | float) and isinstance(b, int | float) and a and b:
        return format(float(a) / float(b), fmt) + "x"
    return "—"


def _mb(size: Any) -> str:
    if not isinstance(size, int | float):
        return "—"
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB"


def budget_line(budget: dict[str, Any] | None) -> list[str]:
    """compress's latency budget against the champion (``variants.json``'s
    ``selection.latency_budget``), as one sentence (none without one)."""
    return ["", budget_sentence(LatencyBudget.model_validate(budget))] if budget else []


def variant_section(
    variants: list[dict[str, Any]],
    chosen: str,
    champion: dict[str, Any] | None,
    has_champion: bool = True,
    budget: dict[str, Any] | None = None,
) -> list[str]:
    """The chosen variant against fp32 torch and against the champion's shipped variant
    (no champion row on a first run, ``has_champion`` False), then compress's latency
    ``budget`` when there was one."""
    if not variants:
        return [NA.format("no compressed variants (the trained model ships as is)")]
    by_name = {str(v.get("variant")): v for v in variants}
    pick = by_name.get(chosen) or variants[0]
    base = by_name.get("fp32_torch")
    lines = [f"Chosen: **{pick.get('variant')}** ({pick.get('kind', '?')})", ""]
    header = ["", "size", "p50 ms b1", "p50 ms b32", "recall@1 Δ vs fp32"]
    rows: list[list[Any]] = []
    compared: list[tuple[str, dict[str, Any] | None]] = [("chosen", pick), ("fp32 torch", base)]
    if has_champion:
        compared.append((f"champion {(champion or {}).get('variant', '')}".rstrip(), champion))
    for label, row in compared:
        if row is None:
            rows.append([label, NA.format("not measured"), "—", "—", "—"])
            continue
        delta = row.get("recall_delta", row.get("accuracy_delta"))
        rows.append(
            [
                label,
                _mb(row.get("size_bytes")),
                _f(row.get("p50_ms_b1"), ".2f"),
                _f(row.get("p50_ms_b32"), ".2f"),
                _f(delta, "+.3f"),
            ]
        )
    lines += _table(header, rows)
    ratios = []
    for label, other in (("fp32", base), ("champion", champion)):
        if other is not None and other is not pick:
            ratios.append(
                f"vs {label}: {_ratio(other.get('size_bytes'), pick.get('size_bytes'))} smaller, "
                f"{_ratio(other.get('p50_ms_b1'), pick.get('p50_ms_b1'))} faster at batch 1"
            )
    if ratios:
        lines += ["", "; ".join(ratios)]
    return lines + budget_line(budget)


# -- 3. drift ---------------------------------------------------------------------------------


def drift_section(evaluate: StageReport | None) -> list[str]:
    drift = evaluate.metrics_as(EvaluateMetrics).drift if evaluate is not None else None
    if drift is None or not drift.to_json():
        return [NA.format("no drift summary in the evaluate report")]
    reasons = drift.reasons
    if drift.skipped or drift.detected is None:
        return [f"**Drift: skipped** — {'; '.join(reasons) or 'no reason recorded'}"]
    verdict = "DETECTED" if drift.detected else "none"
    ref_rows = "?" if drift.reference_rows is None else drift.reference_rows
    cur_rows = "?" if drift.current_rows is None else drift.current_rows
    lines = [
        f"**Drift: {verdict}** — {_f(drift.drifted_share, '.2f')} of columns drifted "
        f"({ref_rows} reference vs {cur_rows} new rows)",
        "",
    ]
    scores: list[list[Any]] = []
    drifted = set(drift.drifted_columns)
    for col, p in drift.column_p_values.items():
        scores.append([col, f"p = {_f(p, '.3g')}", "yes" if col in drifted else "no", p])
    for col, d in drift.column_distances.items():
        far = -d if d is not None else None
        scores.append([col, f"distance {_f(d, '.3g')}", "yes" if col in drifted else "no", far])
    for name, auc in (("image", drift.embedding_auc_image), ("text", drift.embedding_auc_text)):
        if auc is not None:
            scores.append([f"{name} embeddings", f"classifier AUC {_f(auc)}", "—", -float(auc)])
    scores.sort(key=lambda r: (r[2] != "yes", r[3] if isinstance(r[3], float) else 0.0))
    if scores:
        lines += _table(["column", "test", "drifted"], [r[:3] for r in scores[:TOP_DRIFTED]])
    for reason in reasons[:3]:
        lines += ["", f"- {reason}"]
    return lines


# -- 4. canary --------------------------------------------------------------------------------


def canary_section(decision: str, reasons: list[str], steps: list[dict[str, Any]]) -> list[str]:
    """The canary's outcome: decision, why, and the verdict at each traffic step
    (``weight``: the candidate's traffic percent, deploy.steps)."""
    lines = [CANARY_HEADING, "", f"**Canary: {decision}**", ""]
    if steps:
        rows = [
            [f"{s['weight']}%" if s.get("weight") is not None else "—", s.get("verdict")]
            for s in steps
        ]
        lines += [*_table(["candidate traffic", "step verdict"], rows), ""]
    lines += [f"- {r}" for r in reasons[:6]]
    records = canary_records({"steps": steps})
    if records:  # every test's numbers: statistic, p, sample sizes against the powered size
        lines += ["", *table(CANARY_HEADER, canary_rows(records))]
    return lines


def with_canary(
    card_md: str, decision: str, reasons: list[str], steps: list[dict[str, Any]]
) -> str:
    """The card with its canary section set (replacing an earlier one), before lineage."""
    section = "\n".join(canary_section(decision, reasons, steps)) + "\n\n"
    start = card_md.find(CANARY_HEADING)
    if start >= 0:
        end = card_md.find("\n## ", start + len(CANARY_HEADING))
        card_md = card_md[:start] + (card_md[end + 1 :] if end >= 0 else "")
    at = card_md.find(LINEAGE_HEADING)
    if at < 0:
        return card_md.rstrip("\n") + "\n\n" + section
    return card_md[:at] + section + card_md[at:]


# -- 5. lineage and data ----------------------------------------------------------------------


def stages_section(reports: dict[str, StageReport]) -> list[str]:
    data = {
        k: v for k, v in reports.items() if k in ("ingest", "validate", "dedupe", "clip_filter")
    }
    if not data:
        return [NA.format("no data stage reports were given")]
    order = [s for s in STAGE_ORDER if s in data]
    rows = []
    for stage in order:
        rep = data[stage]
        reasons = ", ".join(
            f"{k}: {v}" for k, v in sorted(rep.rejected.items(), key=lambda kv: -kv[1])[:4]
        )
        rows.append([stage, rep.rows_in, rep.rows_out, rep.rows_rejected, reasons or "—"])
    return _table(["stage", "rows in", "rows out", "rejected", "top reject reasons"], rows)


# -- 6. attached ------------------------------------------------------------------------------


def artifact_link(path: str, run_id: str, experiment_id: str) -> str:
    """A Markdown link to an artifact on the run's page in the MLflow UI (route
    ``/experiments/:experimentId/runs/:runUuid/artifactPath/*`` of MLflow 3's web app)."""
    shown = path.split(" (", 1)
    clean = shown[0]
    extra = f" ({shown[1]}" if len(shown) > 1 else ""
    if not run_id or not experiment_id:
        return f"`{clean}`{extra}"
    url = f"#/experiments/{experiment_id}/runs/{run_id}/artifactPath/{quote(clean)}"
    return f"[{clean}]({url}){extra}"


def build_model_card(inputs: CardInputs) -> str:
    """The Markdown card for one model version."""
    ev = inputs.evaluate

    def link(path: str) -> str:
        return artifact_link(path, inputs.run_id, inputs.experiment_id)

    full = next((a for a in inputs.artifacts if a.endswith("reports/evaluate.json")), None)
    lines = [f"# {inputs.model_name}", "", "## Decision", "", *decision_section(ev)]
    if full is not None:
        lines += ["", f"Every metric, interval and check: {link(full)}"]
    sections: list[tuple[str, list[str]]] = [
        (
            "Chosen variant",
            variant_section(
                inputs.variants,
                inputs.chosen_variant,
                inputs.champion_variant,
                has_champion=ev is not None and ev.metrics_as(EvaluateMetrics).champion is not None,
                budget=inputs.latency_budget,
            ),
        ),
        ("Drift", drift_section(ev)),
    ]
    for title, body in sections:
        lines += ["", f"## {title}", "", *body]
    lines += ["", LINEAGE_HEADING, ""]
    if inputs.lineage:
        lines += _table(["lineage", "value"], [[k, v] for k, v in sorted(inputs.lineage.items())])
    else:
        lines.append(NA.format("no lineage facts"))
    tail: list[tuple[str, list[str]]] = [
        ("Data: rows per stage", stages_section(inputs.reports)),
        ("Intended use", [inputs.intended_use or NA.format("not stated in config")]),
        (
            "Limitations",
            [f"- {x}" for x in inputs.limitations] or [NA.format("not stated in config")],
        ),
        (
            "Attached artifacts (on the run)",
            [f"- {link(a)}" for a in inputs.artifacts] or [NA.format("none attached")],
        ),
    ]
    for title, body in tail:
        lines += ["", f"## {title}", "", *body]
    return "\n".join(lines) + "\n"
