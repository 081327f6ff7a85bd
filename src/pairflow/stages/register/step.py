"""The ``register`` step: :func:`run`, called by ``pairflow.components.register`` and by
``pairflow register``.

Register is a model stage: it outputs the version's URI, a model card and a report, no
manifest (``rows_in`` = ``rows_out`` counts the manifest's rows it records as lineage).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pairflow.config import PairflowConfig
from pairflow.data.schema import read_manifest
from pairflow.errors import InputDataError
from pairflow.metrics import RegisterMetrics
from pairflow.report import StageReport, Stopwatch
from pairflow.stage_io import finish_stage
from pairflow.stages.register.register_version import RegisterInputs, RegisterResult, register_model

__all__ = ["RegisterInputs", "RegisterOutputs", "run"]

log = logging.getLogger("pairflow.registry")


@dataclass(frozen=True)
class RegisterOutputs:
    """The stage report and the model card (Markdown)."""

    report: Path
    model_card: Path

    @classmethod
    def in_dir(cls, out_dir: str | Path) -> RegisterOutputs:
        d = Path(out_dir)
        return cls(report=d / "report.json", model_card=d / "model_card.md")


def _check_model_inputs(inputs: RegisterInputs) -> None:
    """A model input that is given must hold files: there is no pass-through registration."""
    for name, value in (("model", inputs.compressed), ("trained_model", inputs.trained)):
        if value is not None and not (value.is_dir() and any(value.iterdir())):
            raise InputDataError(f"register: input {name} ({value}) holds no model files")


def run(cfg: PairflowConfig, inputs: RegisterInputs, outputs: RegisterOutputs) -> RegisterResult:
    """Register the shipping variant in MLflow with lineage, card and ``challenger``.

    ``inputs.compressed`` is the compress step's directory (or an HF model directory). The
    result's ``deployable_uri`` is ``models:/NAME/VERSION`` when the gate passed (deploy's
    input), else empty.
    """
    _check_model_inputs(inputs)
    watch = Stopwatch()
    rows = len(read_manifest(inputs.manifest))
    result = register_model(cfg, inputs)
    outputs.model_card.parent.mkdir(parents=True, exist_ok=True)
    outputs.model_card.write_text(result.card)
    report = StageReport(
        stage="register",
        rows_in=rows,
        rows_out=rows,
        seconds=watch.seconds,
        metrics=report_metrics(result).to_json(),
        notes=_notes(result),
    )
    # the pipeline's run; standalone with a KFP run id, the run register found or made for it
    run_id = inputs.mlflow_run_id or (result.run_id if inputs.kfp_run_id else "")
    finish_stage(report, outputs.report, cfg, run_id)
    return result


def report_metrics(result: RegisterResult) -> RegisterMetrics:
    return RegisterMetrics(
        registered_version=result.uri,
        model_name=result.name,
        version=result.version,
        gate=result.gate,
        challenger=result.challenger,
        reused=result.reused,
        mlflow_run_id=result.run_id,
        model_id=result.model_id,
    )


def _notes(result: RegisterResult) -> list[str]:
    notes = []
    if result.reused:
        notes.append(f"{result.uri} was already registered for this run: nothing new created")
    if not result.challenger:
        notes.append(f"gate {result.gate}: no alias set, nothing to deploy")
    return notes
