"""Human-readable views of stage reports: Markdown for KFP, a rich table for the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.table import Table

from pairflow.metrics import (
    ClipFilterMetrics,
    CompressMetrics,
    DeployMetrics,
    EvaluateMetrics,
    Gate,
    IngestMetrics,
    LatencyBudget,
    RegisterMetrics,
    Scores,
    TrainMetrics,
    ValidateMetrics,
    VariantFigures,
)
from pairflow.report import StageReport

# The order stages appear in a run summary (the DAG's order).
STAGE_ORDER = (
    "ingest",
    "validate",
    "dedupe",
    "clip_filter",
    "train",
    "evaluate",
    "compress",
    "register",
    "deploy",
)


def report_markdown(report: StageReport) -> str:
    """A KFP Markdown summary of one stage report."""
    status = "" if report.implemented else " — **not implemented yet (rows passed through)**"
    lines = [
        f"## {report.stage}{status}",
        "",
        "| rows in | rows out | rejected | seconds |",
        "|---:|---:|---:|---:|",
        f"| {report.rows_in} | {report.rows_out} | {report.rows_rejected} | {report.seconds:.2f} |",
    ]
    if report.rejected:
        lines += ["", "| reject reason | rows |", "|---|---:|"]
        lines += [f"| `{k}` | {v} |" for k, v in sorted(report.rejected.items())]
    if report.metrics:
        lines += ["", "```json", json.dumps(report.metrics, indent=2, sort_keys=True), "```"]
    for note in report.notes:
        lines += ["", f"> {note}"]
    return "\n".join(lines) + "\n"


def find_reports(run_dir: str | Path) -> dict[str, StageReport]:
    """Stage reports (merged, not per-shard) under a kfp.local run directory, by stage."""
    found: dict[str, StageReport] = {}
    for path in sorted(Path(run_dir).rglob("*report")):
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or "stage" not in data:
            continue
        rep = StageReport.read(path)
        if rep.shard is None:
            found[rep.stage] = rep
    return found


# Stages whose rows are manifest rows; the others are model stages with their own figures.
DATA_STAGES = frozenset({"ingest", "validate", "dedupe", "clip_filter"})


def _num(value: Any, fmt: str = ".3f") -> str:
    return format(value, fmt) if isinstance(value, int | float) else "n/a"


def train_metric_name(model: Any) -> str:
    """What ``best_val_metric`` measures for a model family (train/objectives.py)."""
    if model == "classifier":
        return "val accuracy"
    return "val recall@1 (mean i2t, t2i)"


def _train_figures(m: TrainMetrics) -> str:
    parts = [m.model]
    if m.val.val_loss is not None:
        parts.append(f"val loss {_num(m.val.val_loss)}")
    parts.append(
        f"best {train_metric_name(m.model)} {_num(m.best_val_metric)}"
        f" (epoch {m.best_epoch}/{m.epochs})"
    )
    parts.append(f"{_num(m.samples_per_s, '.0f')} samples/s x{m.world_size}")
    return ", ".join(parts)


def gate_verdict(gate: Gate | None) -> str:
    """``passed`` / ``BLOCKED``, with ``(not enforced)`` when the gate only reported."""
    verdict = "passed" if gate is not None and gate.passed else "BLOCKED"
    if gate is not None and not gate.enforced:
        verdict += " (not enforced)"
    return verdict


def _evaluate_figures(m: EvaluateMetrics) -> str:
    parts = [f"gate {gate_verdict(m.gate)}"]
    cand = m.candidate
    champ = m.champion.metrics if m.champion is not None else Scores()
    key = "i2t_recall_at_1" if "i2t_recall_at_1" in cand else "accuracy"
    if key in cand:
        versus = f" vs champion {_num(champ.get(key))}" if key in champ else " (no champion)"
        parts.append(f"{key.replace('_at_', '@')} {_num(cand.get(key))}{versus}")
    return ", ".join(parts)


def _compress_figures(m: CompressMetrics) -> str:
    if not m.chosen:
        return "no variant chosen"
    var = m.variants.get(m.chosen) or VariantFigures()
    return (
        f"chose {m.chosen}: {_num(var.size_ratio, '.2f')}x smaller, "
        f"{_num(var.speedup(32), '.2f')}x faster at batch 32 than fp32"
    )


def stage_figures(report: StageReport, *, rows: bool = True) -> str:
    """The headline figures of one stage, in words (what the stage decided or measured).

    Data stages lead with their row counts unless ``rows`` is False (a table shows them).
    """
    stage = report.stage
    if stage == "train":
        return _train_figures(report.metrics_as(TrainMetrics))
    if stage == "evaluate":
        return _evaluate_figures(report.metrics_as(EvaluateMetrics))
    if stage == "compress":
        return _compress_figures(report.metrics_as(CompressMetrics))
    if stage == "register":
        version = report.metrics_as(RegisterMetrics).registered_version
        return f"registered {version}" if version else "nothing registered"
    if stage == "deploy":
        dep = report.metrics_as(DeployMetrics)
        first = f" ({dep.reasons[0]})" if dep.reasons else ""
        return f"{'no decision' if dep.decision is None else dep.decision}{first}"
    parts: list[str] = []
    if stage == "ingest":
        shards = report.metrics_as(IngestMetrics).shards
        if shards is not None:
            parts.append(f"{shards} shards")
    if stage == "validate":
        contract = report.metrics_as(ValidateMetrics).contract
        if contract is not None:
            parts.append(f"contract {'passed' if contract.passed else 'FAILED'}")
    if stage == "clip_filter":
        flt = report.metrics_as(ClipFilterMetrics)
        if flt.roc_auc is not None:
            parts.append(f"ROC-AUC {_num(flt.roc_auc)}")
        if flt.threshold is not None:
            parts.append(f"threshold {_num(flt.threshold)}")
    if rows and stage in DATA_STAGES:
        parts.insert(0, f"{report.rows_in} in, {report.rows_out} out")
    return ", ".join(parts)


def stage_table(reports: dict[str, StageReport], title: str = "pairflow run") -> Table:
    """Rows per data stage, each model stage's own figures, and time, in DAG order.

    Model stages hand on a model, not the manifest: their row counts would only repeat the
    input, so they show their figures instead.
    """
    table = Table(title=title)
    table.add_column("stage", no_wrap=True)
    for col in ("in", "out", "rejected"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("s", justify="right", no_wrap=True)
    table.add_column("figures", overflow="fold", ratio=1)
    ordered: Iterable[str] = [s for s in STAGE_ORDER if s in reports] + sorted(
        s for s in reports if s not in STAGE_ORDER
    )
    for stage in ordered:
        rep = reports[stage]
        if stage in DATA_STAGES:
            top = ", ".join(
                f"{k} {v}" for k, v in sorted(rep.rejected.items(), key=lambda kv: -kv[1])[:3]
            )
            figures = stage_figures(rep, rows=False)
            if top:
                figures = f"rejected: {top}" + (f"; {figures}" if figures else "")
            row = [stage, str(rep.rows_in), str(rep.rows_out), str(rep.rows_rejected)]
        else:
            figures = stage_figures(rep)
            row = [stage, "", "", ""]
        table.add_row(*row, f"{rep.seconds:.1f}", figures)
    return table


def budget_sentence(budget: LatencyBudget) -> str:
    """A choice's latency budget against the champion (:attr:`Choice.budget`) in one
    sentence, for the run summary and the model card."""

    def ms(value: float | None) -> str:
        return f"{value:.2f}" if isinstance(value, int | float) else "—"

    verdict = "met" if budget.met else "NOT met"
    return (
        f"Latency budget {verdict}: chosen p50 {ms(budget.chosen_p50_ms)} ms at batch "
        f"{budget.batch_size} vs limit {ms(budget.limit_ms)} ms (champion "
        f"{ms(budget.champion_p50_ms)} ms + {100 * float(budget.max_slowdown or 0):.0f}%, "
        "timed interleaved)."
    )
