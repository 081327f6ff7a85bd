"""The ``evaluate`` step: :func:`run`, called by ``pairflow.components.evaluate`` and by
``pairflow evaluate``.

Evaluate is a model stage: it outputs its decision (the gate), a report and its pages, no
manifest. ``rows_in`` (= ``rows_out``) counts the rows read; the held-out and evaluated row
counts are report figures.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pairflow.config import PairflowConfig
from pairflow.data.schema import read_manifest
from pairflow.models.embeddings import read_embeddings
from pairflow.registry.champion import champion_variant
from pairflow.report import StageReport, Stopwatch
from pairflow.stage_io import finish_stage
from pairflow.stages.evaluate.gate import GateDecision
from pairflow.stages.evaluate.summary import result_markdown

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger("pairflow.stages.evaluate.step")

STAGE = "evaluate"


@dataclass(frozen=True)
class EvaluateInputs:
    """The curated manifest (held-out rows are drawn from it) and the candidate model.

    ``embeddings`` names a clip-filter embeddings Parquet (skipped with a warning when the
    file is absent: the filter may have written none); ``champion`` overrides the registry's
    champion (``pairflow evaluate --champion``); ``mlflow_run_id`` is the pipeline's run the
    gate is logged to (empty standalone).
    """

    manifest: str
    model: str
    embeddings: str | None = None
    champion: str | None = None
    mlflow_run_id: str = ""


@dataclass(frozen=True)
class EvaluateOutputs:
    """The report, drift HTML, this run's drift reference Parquet, a Markdown summary, the
    evaluation plots (one HTML page) and the candidate's serving reference Parquet (the
    drift monitor's baseline once the candidate serves)."""

    report: Path
    drift_html: Path
    reference: Path
    summary: Path | None = None
    plots: Path | None = None
    serving_reference: Path | None = None

    @classmethod
    def in_dir(cls, out_dir: str | Path) -> EvaluateOutputs:
        d = Path(out_dir)
        return cls(
            d / "report.json",
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


def run(
    cfg: PairflowConfig,
    inputs: EvaluateInputs,
    outputs: EvaluateOutputs,
    *,
    progress: Callable[[str], None] | None = None,
) -> StepOutcome:
    """Evaluate the candidate against the champion and decide the gate; write the report
    and ``outputs``. There is no pass-through: a missing or unreadable model fails the step.
    """
    # lazy: boto3, botocore, torch (slow to import); only this path needs it
    from pairflow.stages.evaluate.run import evaluate_frame

    watch = Stopwatch()
    manifest, model_dir, embeddings = inputs.manifest, inputs.model, inputs.embeddings
    files = outputs
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
        champion=inputs.champion,
        serving_reference_out=files.serving_reference,
    )
    if cfg.evaluate.report_latency and result.champion_info is not None:
        report_latency(cfg, df, model_dir, result.champion_info.uri, result.gate)
    report = StageReport(
        stage=STAGE,
        rows_in=len(df),
        rows_out=len(df),
        seconds=watch.seconds,
        metrics=result.report_metrics(),
        notes=list(result.gate.reasons),
    )
    finish_stage(report, outputs.report, cfg, inputs.mlflow_run_id)
    if files.plots is not None:
        from pairflow.stages.evaluate.plots import write_plots

        margin = cfg.evaluate.non_inferiority_margin if result.champion is not None else None
        write_plots(result, files.plots, margin)
    if inputs.mlflow_run_id:
        _log_gate(cfg, inputs.mlflow_run_id, result.gate.to_dict(), files.drift_html, files.plots)
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
    # lazy: boto3, botocore, torch (slow to import); only this path needs it
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
    run_id: str,
    gate: dict[str, Any],
    html: Path,
    plots: Path | None = None,
) -> None:
    """Gate tags, the drift HTML and the plots page on the pipeline's MLflow run ``run_id``."""
    uri = cfg.mlflow.tracking_uri
    # lazy: mlflow (slow to import); only this path needs it
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
