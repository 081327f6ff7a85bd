"""A judged window in MLflow: one run per window in experiment ``monitor.experiment``.

The run carries the verdict's numbers as metrics, the verdict as ``monitor/verdict.json``
and the Evidently HTML as ``monitor/drift_report.html``. Judging the same window again
(same ``pairflow.window_key``) updates its run instead of adding one, so the history counts
every window once. The champion's model version links to the newest run.

Tags on the monitor run (searchable):

- ``pairflow.window_key``: :attr:`WindowId.key` (``model/version/start/end``), the
  idempotency key of a triggered retrain;
- ``pairflow.window_start``, ``pairflow.window_end``: the window, ISO 8601 UTC;
- ``pairflow.champion_version``: the version judged (the window's traffic was served by it);
- ``pairflow.monitor.model_name``: the registered model;
- ``pairflow.monitor.judged``, ``pairflow.stages.monitor.drift``,
``pairflow.monitor.score_dropped``:
  ``true``/``false``;
- written by the trigger (``pairflow.stages.monitor.trigger_record``) on the same run:
  ``pairflow.monitor.decision``, ``pairflow.monitor.reason``,
  ``pairflow.monitor.retrain_run_id`` and its other ``pairflow.monitor.*`` tags.

Tags on the champion's model version: ``pairflow.monitor.last_run`` (run id),
``pairflow.monitor.last_window`` (window key), ``pairflow.monitor.last_drift``
(``true``/``false``/``skipped``).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from mlflow import MlflowClient

from pairflow import tracking
from pairflow.config import PairflowConfig
from pairflow.stages.monitor.reference import ChampionReference, resolve_uri
from pairflow.stages.monitor.verdict import WindowVerdict

TAG_WINDOW_KEY = "pairflow.window_key"
TAG_WINDOW_START = "pairflow.window_start"
TAG_WINDOW_END = "pairflow.window_end"
TAG_CHAMPION_VERSION = "pairflow.champion_version"
TAG_MODEL = "pairflow.monitor.model_name"
TAG_JUDGED = "pairflow.monitor.judged"
TAG_DRIFT = "pairflow.monitor.drift"
TAG_SCORE_DROPPED = "pairflow.monitor.score_dropped"
MV_TAG_LAST_RUN = "pairflow.monitor.last_run"
MV_TAG_LAST_WINDOW = "pairflow.monitor.last_window"
MV_TAG_LAST_DRIFT = "pairflow.monitor.last_drift"
VERDICT_ARTIFACT = "monitor/verdict.json"
REPORT_ARTIFACT_DIR = "monitor"
REPORT_FILE = "drift_report.html"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _quote(value: str) -> str:
    if "'" in value:
        raise ValueError(f"{value!r}: a quote cannot be used in an MLflow tag filter")
    return f"'{value}'"


def verdict_metrics(verdict: WindowVerdict) -> dict[str, float]:
    """The verdict's numbers as MLflow metrics (absent figures left out)."""
    out: dict[str, float] = {
        "rows": float(verdict.rows),
        "reference_rows": float(verdict.reference_rows),
        "judged": float(verdict.judged),
        "drift": float(verdict.drift),
        "score_dropped": float(verdict.score_dropped),
        "drifted_columns": float(len(verdict.drifted_columns)),
    }
    for name in ("drift_share", "score_mean", "reference_score_mean", "score_drop"):
        value = getattr(verdict, name)
        if value is not None and math.isfinite(value):
            out[name] = float(value)
    for tower, auc in verdict.embedding_auc.items():
        out[f"embedding_auc_{tower}"] = float(auc)
    return out


def _runs(client: Any, experiment_id: str, flt: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=flt, max_results=500, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def record_verdict(verdict: WindowVerdict, champion: ChampionReference, cfg: PairflowConfig) -> str:
    """Log ``verdict`` (and its HTML) to the window's run; tag the champion's version with it.

    Returns the run id (also set as ``verdict.mlflow_run_id``).
    """

    uri = resolve_uri(cfg)
    client = MlflowClient(tracking_uri=uri)
    exp_id = tracking.ensure_experiment(uri, cfg.monitor.experiment)
    win = verdict.window
    tags = {
        TAG_WINDOW_KEY: win.key,
        TAG_WINDOW_START: win.start,
        TAG_WINDOW_END: win.end,
        TAG_CHAMPION_VERSION: champion.version,
        TAG_MODEL: champion.model_name,
        TAG_JUDGED: _bool(verdict.judged),
        TAG_DRIFT: _bool(verdict.drift),
        TAG_SCORE_DROPPED: _bool(verdict.score_dropped),
    }
    same = _runs(client, exp_id, f"tags.`{TAG_WINDOW_KEY}` = {_quote(win.key)}")
    if same:
        run_id = str(same[0].info.run_id)
    else:
        run = client.create_run(exp_id, tags=tags, run_name=f"window {win.start} .. {win.end}")
        run_id = str(run.info.run_id)
    verdict.mlflow_run_id = run_id
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    for key, num in verdict_metrics(verdict).items():
        client.log_metric(run_id, key, num)
    client.log_dict(run_id, verdict.to_dict(), VERDICT_ARTIFACT)
    html = Path(verdict.report_html) if verdict.report_html else None
    if html is not None and html.is_file():
        with tempfile.TemporaryDirectory(prefix="pairflow-monitor-") as tmp:
            copy = Path(tmp) / REPORT_FILE
            copy.write_bytes(html.read_bytes())
            client.log_artifact(run_id, str(copy), REPORT_ARTIFACT_DIR)
    if client.get_run(run_id).info.status != "FINISHED":
        client.set_terminated(run_id, "FINISHED")
    last = _bool(verdict.drift) if verdict.judged else "skipped"
    for key, value in (
        (MV_TAG_LAST_RUN, run_id),
        (MV_TAG_LAST_WINDOW, win.key),
        (MV_TAG_LAST_DRIFT, last),
    ):
        client.set_model_version_tag(champion.model_name, champion.version, key, value)
    return run_id


def consecutive_drift_windows(cfg: PairflowConfig, model_name: str) -> int:
    """Judged windows with drift in a row, newest first, of the newest judged window's
    champion version (windows not judged neither count nor break the run; a new champion
    starts from zero)."""

    uri = resolve_uri(cfg)
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(cfg.monitor.experiment)
    if exp is None:
        return 0
    flt = f"tags.`{TAG_MODEL}` = {_quote(model_name)} and tags.`{TAG_JUDGED}` = 'true'"
    runs = _runs(client, str(exp.experiment_id), flt)
    runs.sort(key=lambda r: str(r.data.tags.get(TAG_WINDOW_END, "")), reverse=True)
    if not runs:
        return 0
    version = runs[0].data.tags.get(TAG_CHAMPION_VERSION)
    count = 0
    for run in runs:
        tags = run.data.tags
        if tags.get(TAG_CHAMPION_VERSION) != version or tags.get(TAG_DRIFT) != "true":
            break
        count += 1
    return count
