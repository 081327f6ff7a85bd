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
    """One monitor pass (``pairflow.stages.monitor.run_step``); returns the decision line."""
    from pairflow.stages.monitor.run_step import monitor_step

    return monitor_step(
        defaults_json,
        params,
        window_end,
        dry_run,
        kfp_host,
        retrain_version,
        decision.path,
        report.path,
    )
