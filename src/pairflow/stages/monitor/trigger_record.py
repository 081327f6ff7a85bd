"""Trigger decisions in MLflow: recorded on the window's monitor run, read back as history.

The ``pairflow-monitor`` experiment (``monitor.experiment``) is the durable state shared by
``pairflow monitor`` and the KFP ``monitor`` pipeline: each judged window has one run
(:func:`pairflow.stages.monitor.record.record_verdict`), tagged ``pairflow.window_key``. The trigger
adds its decision to that run as tags (searchable), metrics (the numbers) and
``monitor/decision.json`` (everything). A submission is recorded in two steps: ``in_flight``
before the retrain is submitted, then ``submitted`` with the run id (or ``failed`` with the
error), so a crash between the two leaves the window blocked, never submitted twice.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from pairflow.stages.monitor.policy import Decision, TriggerHistory

log = logging.getLogger("pairflow.stages.monitor")

TAG_WINDOW_KEY = "pairflow.window_key"
TAG_DECISION = "pairflow.monitor.decision"
TAG_REASON = "pairflow.monitor.reason"
TAG_MESSAGE = "pairflow.monitor.message"
TAG_MODEL = "pairflow.monitor.model_name"
TAG_DRY_RUN = "pairflow.monitor.dry_run"
TAG_SUBMIT_STATE = "pairflow.monitor.submit_state"
TAG_TRIGGERED_AT = "pairflow.monitor.triggered_at"
TAG_RETRAIN_RUN = "pairflow.monitor.retrain_run_id"
TAG_RETRAIN_BACKEND = "pairflow.monitor.retrain_backend"
TAG_RETRAIN_SOURCE = "pairflow.monitor.retrain_data_source"
TAG_RETRAIN_VERSION = "pairflow.monitor.retrain_pipeline_version"
TAG_RETRAIN_STATE = "pairflow.monitor.retrain_state"
TAG_SUBMIT_ERROR = "pairflow.monitor.submit_error"
DECISION_ARTIFACT = "monitor/decision.json"

SubmitState = Literal["in_flight", "submitted", "failed"]
# States that hold a window key and start a cooldown: a failed submission started nothing.
_HOLDING = ("in_flight", "submitted")


class MonitorRecordError(RuntimeError):
    """The decision could not be read from or written to MLflow."""


def _client(tracking_uri: str) -> Any:
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def _quote(value: str) -> str:
    if "'" in value:
        raise ValueError(f"{value!r}: a quote cannot be used in an MLflow tag filter")
    return f"'{value}'"


def _triggered_runs(tracking_uri: str, experiment: str, model_name: str) -> list[Any]:
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    flt = f"tags.`{TAG_MODEL}` = {_quote(model_name)} and tags.`{TAG_DECISION}` = 'trigger'"
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [exp.experiment_id], filter_string=flt, max_results=500, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def load_history(tracking_uri: str, experiment: str, model_name: str) -> TriggerHistory:
    """Submitted retrains of ``model_name``: the newest, and every window key that has one."""
    last_at: datetime | None = None
    last_key = ""
    submitted: dict[str, str] = {}
    for run in _triggered_runs(tracking_uri, experiment, model_name):
        tags = run.data.tags
        if tags.get(TAG_SUBMIT_STATE) not in _HOLDING:
            continue
        key = tags.get(TAG_WINDOW_KEY, "")
        at_text = tags.get(TAG_TRIGGERED_AT, "")
        if not key or not at_text:
            raise MonitorRecordError(
                f"monitor run {run.info.run_id}: a triggered decision without "
                f"{TAG_WINDOW_KEY} or {TAG_TRIGGERED_AT}; the history cannot be trusted"
            )
        at = datetime.fromisoformat(at_text)
        submitted[key] = tags.get(TAG_RETRAIN_RUN, "")
        if last_at is None or at > last_at:
            last_at, last_key = at, key
    return TriggerHistory(last_at, last_key, submitted)


def _metrics(numbers: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, value in numbers.items():
        if isinstance(value, bool | int | float):
            out[f"monitor.{key}"] = float(value)
        elif isinstance(value, dict):
            for sub, v in value.items():
                if isinstance(v, int | float) and not isinstance(v, bool):
                    out[f"monitor.{key}.{sub}"] = float(v)
    return out


def record_decision(
    tracking_uri: str, run_id: str, decision: Decision, model_name: str, dry_run: bool
) -> None:
    """Tag the window's monitor run with the decision and log its numbers."""
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow.entities import Metric, RunTag

    client = _client(tracking_uri)
    tags = {
        TAG_WINDOW_KEY: decision.window_key,
        TAG_DECISION: decision.outcome,
        TAG_REASON: decision.reason,
        TAG_MESSAGE: decision.message[:5000],
        TAG_MODEL: model_name,
        TAG_DRY_RUN: str(dry_run).lower(),
    }
    metrics = [Metric(k, v, 0, 0) for k, v in _metrics(decision.numbers).items()]
    client.log_batch(run_id, metrics=metrics, tags=[RunTag(k, v) for k, v in tags.items()])
    client.log_dict(run_id, decision.to_dict(), DECISION_ARTIFACT)


def mark_submission(
    tracking_uri: str,
    run_id: str,
    state: SubmitState,
    *,
    triggered_at: str = "",
    retrain_run_id: str = "",
    backend: str = "",
    data_source: str = "",
    pipeline_version: str = "",
    error: str = "",
) -> None:
    """Record a submission step on the window's monitor run (empty fields are not written)."""
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow.entities import RunTag

    values = {
        TAG_SUBMIT_STATE: state,
        TAG_TRIGGERED_AT: triggered_at,
        TAG_RETRAIN_RUN: retrain_run_id,
        TAG_RETRAIN_BACKEND: backend,
        TAG_RETRAIN_SOURCE: data_source,
        TAG_RETRAIN_VERSION: pipeline_version,
        TAG_SUBMIT_ERROR: error[:5000],
    }
    tags = [RunTag(k, v) for k, v in values.items() if v]
    _client(tracking_uri).log_batch(run_id, tags=tags)


def mark_retrain_state(tracking_uri: str, run_id: str, state: str) -> None:
    """The triggered retrain's end state, where the monitor followed it (kfp.local, --wait)."""
    _client(tracking_uri).set_tag(run_id, TAG_RETRAIN_STATE, state)
