"""Plain-Python body of the ``evaluate`` pipeline step (wrapped by ``pairflow.components``).

Evaluate is not a filter: the manifest passes through (rows_out = rows_in); the held-out
and evaluated row counts are report figures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pairflow import tracking
from pairflow.config import PairflowConfig
from pairflow.data.schema import empty_rejected, read_manifest, write_manifest
from pairflow.report import StageOutputs, StageReport, Stopwatch
from pairflow.stage_io import finish_stage, load_step_config, setup_logging
from pairflow.stages.evaluate.gate import GateDecision

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("pairflow.stages.evaluate.step")

STAGE = "evaluate"


@dataclass
class EvaluateFiles:
    """Extra outputs: drift HTML, this run's drift reference Parquet, a Markdown summary,
    the evaluation plots (one HTML page) and the candidate's serving reference Parquet (the
    drift monitor's baseline once the candidate serves)."""

    drift_html: Path
    reference: Path
    summary: Path | None = None
    plots: Path | None = None
    serving_reference: Path | None = None

    @classmethod
    def in_dir(cls, out_dir: str | Path) -> EvaluateFiles:
        d = Path(out_dir)
        return cls(
            d / "drift.html",
            d / "drift_reference.parquet",
            d / "summary.md",
            d / "plots.html",
            d / "serving_reference.parquet",
        )


@dataclass
class StepOutcome:
    """What the component needs for its KFP artifacts."""

    passed: bool
    report: StageReport
    scalars: dict[str, float] = field(default_factory=dict)
    class_names: list[str] = field(default_factory=list)
    confusion: list[list[int]] | None = None
    markdown: str = ""


def evaluate_step(
    config_path: str,
    manifest: str,
    model_dir: str,
    outputs: StageOutputs,
    kfp_run_id: str = "",
    *,
    embeddings: str | None = None,
    files: EvaluateFiles | None = None,
) -> StepOutcome:
    """Evaluate the candidate in ``model_dir`` against the champion and decide the gate.

    There is no pass-through: a missing or unreadable model fails the step.
    """
    setup_logging()
    cfg = load_step_config(config_path)
    return _evaluate(cfg, manifest, model_dir, outputs, kfp_run_id, embeddings, files)


def _evaluate(
    cfg: PairflowConfig,
    manifest: str,
    model_dir: str,
    outputs: StageOutputs,
    kfp_run_id: str,
    embeddings: str | None,
    files: EvaluateFiles | None,
) -> StepOutcome:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="pairflow-evaluate-") as tmp:
        return run_evaluation(
            cfg,
            manifest,
            model_dir,
            outputs,
            files or EvaluateFiles.in_dir(tmp),
            kfp_run_id=kfp_run_id,
            embeddings=embeddings,
        )


def run_evaluation(
    cfg: PairflowConfig,
    manifest: str,
    model_dir: str,
    outputs: StageOutputs,
    files: EvaluateFiles,
    *,
    kfp_run_id: str = "",
    embeddings: str | None = None,
    champion: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> StepOutcome:
    """Evaluate, write kept/rejected/report.json and ``files``; shared by step and CLI.

    ``embeddings`` names a clip-filter embeddings Parquet (skipped with a warning when the
    file is absent: the filter may have written none).
    """
    from pairflow.models.embeddings import read_embeddings
    from pairflow.stages.evaluate.run import evaluate_frame
    from pairflow.stages.evaluate.summary import result_markdown

    watch = Stopwatch()
    cfg.mlflow.tracking_uri = tracking.resolve_tracking_uri(
        cfg.mlflow.tracking_uri, cfg.run.workdir
    )
    df = read_manifest(manifest)
    emb = None
    if embeddings and Path(embeddings).is_file():
        emb = read_embeddings(embeddings)
    elif embeddings:
        log.warning("evaluate: no embeddings file at %s; drift reference without", embeddings)
    result = evaluate_frame(
        df,
        model_dir,
        cfg,
        drift_html=files.drift_html,
        reference_out=files.reference,
        embeddings=emb,
        progress=progress,
        champion=champion,
        serving_reference_out=files.serving_reference,
    )
    if cfg.evaluate.report_latency and result.champion_info is not None:
        report_latency(cfg, df, model_dir, result.champion_info.uri, result.gate)
    write_manifest(df, outputs.kept)
    write_manifest(empty_rejected(list(df.columns)), outputs.rejected)
    report = StageReport(
        stage=STAGE,
        rows_in=len(df),
        rows_out=len(df),
        seconds=watch.seconds,
        metrics=result.report_metrics(),
        notes=list(result.gate.reasons),
    )
    finish_stage(report, outputs, cfg, kfp_run_id)
    if files.plots is not None:
        from pairflow.stages.evaluate.plots import write_plots

        margin = cfg.evaluate.non_inferiority_margin if result.champion is not None else None
        write_plots(result, files.plots, margin)
    if kfp_run_id:
        _log_gate(cfg, kfp_run_id, result.gate.to_dict(), files.drift_html, files.plots)
    markdown = result_markdown(result)
    if files.summary is not None:
        files.summary.parent.mkdir(parents=True, exist_ok=True)
        files.summary.write_text(markdown)
    scalars = {f"candidate.{k}": v for k, v in result.candidate.scalars.items()}
    for ci in result.comparisons:
        scalars[f"delta.{ci.metric}"] = ci.delta
        scalars[f"delta_low.{ci.metric}"] = ci.low
    scalars["gate_passed"] = float(result.gate.passed)
    confusion = result.candidate.confusion
    return StepOutcome(
        passed=result.gate.passed,
        report=report,
        scalars={k: float(v) for k, v in scalars.items() if v == v},  # drop NaN
        class_names=list(result.class_names),
        confusion=confusion.astype(int).tolist() if confusion is not None else None,
        markdown=markdown,
    )


def report_latency(
    cfg: PairflowConfig,
    frame: pd.DataFrame,
    model_dir: str,
    champion_ref: str,
    gate: GateDecision,
) -> None:
    """Add the candidate's latency against the champion's shipped variant to ``gate`` (a
    report line and a ``latency`` check; never a failure: compress enforces the budget)."""
    from pairflow.registry.champion import champion_variant
    from pairflow.stages.evaluate.versus_champion import latency_versus_champion

    champion = champion_variant(cfg, champion_ref) if champion_ref.startswith("models:/") else None
    if champion is None:
        gate.reasons.append(
            f"SKIP latency: champion {champion_ref} is not a registered compressed variant; "
            "nothing to time against"
        )
        return
    log.info("evaluate: timing the candidate against the champion's %s", champion[0].name)
    measured = latency_versus_champion(model_dir, frame, champion, cfg.compress, s3=cfg.data.s3)
    gate.reasons.append(measured.reason())
    gate.checks.append(measured.check())


def _log_gate(
    cfg: PairflowConfig,
    kfp_run_id: str,
    gate: dict[str, Any],
    html: Path,
    plots: Path | None = None,
) -> None:
    """Gate tags, the drift HTML and the plots page on the pipeline's MLflow run."""
    uri = cfg.mlflow.tracking_uri
    run_id = tracking.find_pipeline_run(uri, cfg.mlflow.experiment, kfp_run_id)
    if run_id is None:
        log.warning("no MLflow run for KFP run %s; gate not logged", kfp_run_id)
        return
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    client.set_tag(run_id, "pairflow.gate.passed", str(gate["passed"]).lower())
    client.set_tag(run_id, "pairflow.gate.enforced", str(gate["enforced"]).lower())
    client.set_tag(run_id, "pairflow.gate.reasons", "\n".join(gate["reasons"])[:5000])
    client.log_metric(run_id, "evaluate.gate_passed", float(gate["passed"]))
    client.log_dict(run_id, gate, "evaluate/gate.json")
    for page in (html, plots):
        if page is not None and page.is_file():
            client.log_artifact(run_id, str(page), "evaluate")
