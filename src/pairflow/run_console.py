"""What ``pairflow run`` (and the demo, and the monitor's local retrain) prints: the step
board while the pipeline runs, then the stage table, the headline measurements and the outcome.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console

from pairflow.cli_options import console, ensure_writable_dir
from pairflow.config import PairflowConfig
from pairflow.local_run import LocalRunResult, run_pipeline_locally
from pairflow.metrics import (
    ClipFilterMetrics,
    CompressMetrics,
    DeployMetrics,
    EvaluateMetrics,
    RegisterMetrics,
    TrainMetrics,
    VariantFigures,
)
from pairflow.report import StageReport
from pairflow.run_view import StepBoard
from pairflow.summary import budget_sentence, stage_table, train_metric_name


def run_and_report(
    cfg: PairflowConfig, *, cache: bool, verbose: bool, extra: list[str] | None = None
) -> tuple[bool, list[tuple[str, float]], LocalRunResult]:
    """Run the pipeline with one line per step, then the summary; returns (ok, time split,
    the run's result)."""
    ensure_writable_dir(Path(cfg.run.workdir), "work dir")
    # Pinned to this stdout: kfp.local's own chatter is redirected away while steps run.
    board = StepBoard(Console(file=sys.stdout, width=None if console.is_terminal else 120))
    if verbose:
        result = run_pipeline_locally(cfg, enable_caching=cache, verbose=True)
    else:
        with board.shown():
            result = run_pipeline_locally(
                cfg, enable_caching=cache, listener=board.handle, on_start=board.plan
            )
    if result.reports:
        console.print(
            stage_table(result.reports, title="retrain — what each stage did"),
            width=min(120, console.width),
        )
    for line in highlights(result.reports):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(outcome_line(result.reports))
    for line in extra or []:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"run outputs and reports: {result.run_dir}", markup=False, highlight=False, soft_wrap=True
    )
    if result.log_dir is not None:
        console.print(
            f"step logs (one file per step): {result.log_dir}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"MLflow: {result.tracking_uri} (experiment {result.experiment!r})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"open the MLflow UI: pairflow ui --workdir {cfg.run.workdir}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    status = "[green]succeeded[/]" if result.succeeded else f"[red]FAILED[/]: {result.error}"
    console.print(f"pipeline {status} in {result.seconds:.1f} s")
    return result.succeeded, board.split(), result


def highlights(reports: dict[str, StageReport]) -> list[str]:
    """Headline measurements of the run, one line each (only those that were measured)."""
    lines = []
    flt = reports.get("clip_filter")
    f = flt.metrics_as(ClipFilterMetrics) if flt is not None else None
    if f is not None and f.roc_auc is not None:
        lines.append(
            f"clip-filter ROC-AUC vs the generator's mismatched captions: {f.roc_auc:.3f} "
            f"({f.auc_positives} mismatched, {f.auc_negatives} clean pairs)"
        )
    train = reports.get("train")
    if train is not None:
        t = train.metrics_as(TrainMetrics)
        val_loss = t.val.val_loss
        loss = f", val loss {val_loss:.3f}" if isinstance(val_loss, float) else ""
        lines.append(
            f"train: {t.model} on {t.rows_train} rows, world size "
            f"{t.world_size}, {t.samples_per_s} samples/s; best "
            f"{train_metric_name(t.model)} {t.best_val_metric}{loss}"
        )
    ev = reports.get("evaluate")
    if ev is not None:
        e = ev.metrics_as(EvaluateMetrics)
        r1 = e.candidate.i2t_recall_at_1
        verdict = "passed" if e.gate is not None and e.gate.passed else "BLOCKED"
        lines.append(
            f"evaluate: held-out image→text recall@1 {r1:.3f} on "
            f"{e.evaluated_rows} rows; gate {verdict}"
            if isinstance(r1, float)
            else f"evaluate: gate {verdict}"
        )
        lines.extend(f"  gate: {reason}" for reason in (e.gate.reasons if e.gate else []))
    c = reports["compress"].metrics_as(CompressMetrics) if "compress" in reports else None
    if c is not None and c.chosen:
        var = c.variants.get(c.chosen) or VariantFigures()
        lines.append(
            f"compress: chose {c.chosen} ({var.speedup(32)}x faster at batch 32, "
            f"{var.size_ratio}x smaller than fp32 torch, recall@1 delta "
            f"{var.recall_delta})"
        )
        budget = c.selection.latency_budget if c.selection is not None else None
        if budget is not None:
            lines.append(f"  {budget_sentence(budget)}")
    dep = reports.get("deploy")
    if dep is not None:
        d = dep.metrics_as(DeployMetrics)
        lines.append(f"deploy: {d.decision} ({'; '.join(d.reasons)})")
    return lines


def outcome_line(reports: dict[str, StageReport]) -> str:
    """What was registered and deployed, in words (nothing is claimed that did not happen)."""
    register, deploy = reports.get("register"), reports.get("deploy")
    if register is None:
        return "registered: nothing (gate blocked or the run stopped before register)"
    version = register.metrics_as(RegisterMetrics).registered_version
    registered = f"registered: {version}" if version else "registered: nothing"
    decision = "not run"
    if deploy is not None:
        decided = deploy.metrics_as(DeployMetrics).decision
        decision = "unknown" if decided is None else decided
    return f"{registered}; deployed: {decision}"


def print_split(title: str, split: list[tuple[str, float]], total: float) -> None:
    """Where the wall time went, longest step first."""
    console.print(f"{title}: {total:.1f} s wall", markup=False, highlight=False)
    for name, seconds in sorted(split, key=lambda kv: -kv[1]):
        share = 100 * seconds / total if total > 0 else 0.0
        console.print(f"  {name:<20}{seconds:7.1f} s  {share:4.0f}%", markup=False, highlight=False)
