"""Plain-Python body of the ``register`` pipeline step (wrapped by ``pairflow.components``)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pairflow import tracking
from pairflow.data.schema import empty_rejected, read_manifest, write_manifest
from pairflow.errors import InputDataError
from pairflow.report import StageOutputs, StageReport, Stopwatch
from pairflow.stage_io import load_step_config
from pairflow.stages.register.register_version import RegisterInputs, RegisterResult, register_model

log = logging.getLogger("pairflow.registry")


def _opt(path: str | None) -> Path | None:
    """KFP passes unset optional inputs as empty strings; a missing path is None."""
    return Path(path) if path else None


def _check_model_inputs(model_dir: str, trained_model: str) -> None:
    """A model input that is given must hold files: there is no pass-through registration."""
    for name, value in (("model", model_dir), ("trained_model", trained_model)):
        if value and not (Path(value).is_dir() and any(Path(value).iterdir())):
            raise InputDataError(f"register: input {name} ({value}) holds no model files")


def register_step(
    config_path: str,
    manifest: str,
    model_dir: str,
    outputs: StageOutputs,
    kfp_run_id: str = "",
    *,
    trained_model: str = "",
    evaluate_report: str = "",
    stage_reports: Sequence[str] = (),
    data_docs: str = "",
    drift_html: str = "",
    eval_plots: Sequence[str] = (),
    drift_reference: str = "",
    serving_reference: str = "",
    kfp_run_name: str = "",
    card_out: str = "",
) -> str:
    """Register the shipping variant in MLflow with lineage, card and ``challenger``.

    ``model_dir`` is the compress step's directory (or an HF model directory). Returns
    ``models:/NAME/VERSION`` when the gate passed (deploy's input), else an empty string.
    ``card_out``: where to write the model card (the component's Markdown output).
    """
    _check_model_inputs(model_dir, trained_model)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    watch = Stopwatch()
    cfg = load_step_config(config_path)
    frame = read_manifest(manifest)
    inputs = RegisterInputs(
        manifest=Path(manifest),
        compressed=_opt(model_dir),
        trained=_opt(trained_model),
        evaluate_report=_opt(evaluate_report),
        stage_reports=[Path(p) for p in stage_reports if p],
        data_docs=_opt(data_docs),
        drift_html=_opt(drift_html),
        eval_plots=[Path(p) for p in eval_plots if p],
        drift_reference=_opt(drift_reference),
        serving_reference=_opt(serving_reference),
        kfp_run_id=kfp_run_id,
        kfp_run_name=kfp_run_name,
    )
    result = register_model(cfg, inputs)
    if card_out:
        Path(card_out).parent.mkdir(parents=True, exist_ok=True)
        Path(card_out).write_text(result.card)
    write_manifest(frame, outputs.kept)
    write_manifest(empty_rejected(list(frame.columns)), outputs.rejected)
    report = StageReport(
        stage="register",
        rows_in=len(frame),
        rows_out=len(frame),
        seconds=watch.seconds,
        metrics=report_metrics(result),
        notes=_notes(result),
    )
    report.write(outputs.report)
    log.info("register: %s", report.metrics)
    if kfp_run_id:
        cfg.mlflow.tracking_uri = tracking.resolve_tracking_uri(
            cfg.mlflow.tracking_uri, cfg.run.workdir
        )
        tracking.log_stage_report(cfg, kfp_run_id, report)
    return result.deployable_uri


def report_metrics(result: RegisterResult) -> dict[str, object]:
    return {
        "registered_version": result.uri,
        "model_name": result.name,
        "version": result.version,
        "gate": result.gate,
        "challenger": result.challenger,
        "reused": result.reused,
        "mlflow_run_id": result.run_id,
        "model_id": result.model_id,
    }


def _notes(result: RegisterResult) -> list[str]:
    notes = []
    if result.reused:
        notes.append(f"{result.uri} was already registered for this run: nothing new created")
    if not result.challenger:
        notes.append(f"gate {result.gate}: no alias set, nothing to deploy")
    return notes
