"""The ``monitor`` pipeline's step: judge the last window of served traffic, record the
verdict and decision in MLflow, and submit a guarded retrain through the KFP API."""

from typing import Any

from kfp.dsl import HTML, Artifact, Output

from pairflow.components.base import component


@component
def monitor_window(
    defaults_json: str,
    params: dict[str, Any],
    window_end: str,
    dry_run: bool,
    kfp_host: str,
    retrain_version: str,
    decision: Output[Artifact],
    report: Output[HTML],
) -> str:
    """One monitor pass (``pairflow.stages.monitor.step``); returns the decision line."""
    from pathlib import Path

    from pairflow.stage_io import compiled_config
    from pairflow.stages.monitor.step import MonitorInputs, MonitorOutputs, run

    inputs = MonitorInputs(params, window_end, dry_run, kfp_host, retrain_version)
    outputs = MonitorOutputs(decision=Path(decision.path), report=Path(report.path))
    return run(compiled_config(defaults_json), inputs, outputs)
