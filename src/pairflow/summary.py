"""Human-readable views of stage reports: Markdown for KFP, a rich table for the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.table import Table

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


def _headline(report: StageReport) -> str:
    keys = ("shards", "format", "gate", "decision", "registered_version")
    parts: list[str] = []
    for key in keys:
        val: Any = report.metrics.get(key)
        if val is None:
            continue
        if key == "gate" and isinstance(val, dict):
            val = "passed" if val.get("passed") else "blocked"
            if not report.metrics["gate"].get("enforced", True):
                val += " (not enforced)"
        parts.append(f"{key}={val}")
    return ", ".join(parts)


def stage_table(reports: dict[str, StageReport], title: str = "pairflow run") -> Table:
    """Rows per stage, rejects, time and headline figures, in DAG order."""
    table = Table(title=title)
    for col in (
        "stage",
        "in",
        "out",
        "rejected",
        "top reject reasons",
        "s",
        "implemented",
        "notes",
    ):
        table.add_column(
            col,
            justify="right" if col in {"in", "out", "rejected", "s"} else "left",
            overflow="fold",
        )
    ordered: Iterable[str] = [s for s in STAGE_ORDER if s in reports] + sorted(
        s for s in reports if s not in STAGE_ORDER
    )
    for stage in ordered:
        rep = reports[stage]
        top = ", ".join(
            f"{k}:{v}" for k, v in sorted(rep.rejected.items(), key=lambda kv: -kv[1])[:3]
        )
        table.add_row(
            stage,
            str(rep.rows_in),
            str(rep.rows_out),
            str(rep.rows_rejected),
            top,
            f"{rep.seconds:.1f}",
            "yes" if rep.implemented else "NO (pass-through)",
            _headline(rep),
        )
    return table
