"""The monitor's Prometheus gauges, pushed to a Pushgateway after each window.

A monitor run is a batch job (``pairflow monitor``, the KFP ``monitor`` pipeline), so its
figures go to a Pushgateway (``monitor.pushgateway_url``) under job ``pairflow-monitor``,
grouped by model name, and Prometheus scrapes them from there (``honor_labels``). Gauges,
each labelled ``model_name`` and ``model_version`` (the champion judged):

- ``pairflow_monitor_window_rows``: pairs in the window;
- ``pairflow_monitor_judged``: 1 when the window was big enough to judge;
- ``pairflow_monitor_drift_share``: share of drifted metadata columns;
- ``pairflow_monitor_embedding_auc{tower}``: domain-classifier ROC AUC, ``image``/``text``;
- ``pairflow_monitor_score_drop``: reference mean pair score minus the window's;
- ``pairflow_monitor_drift_detected``: 1 when the window drifted;
- ``pairflow_monitor_consecutive_drift_windows``: judged windows in a row with drift (the
  alert ``PairflowMonitorDriftPersists`` in ``manifests/base/alerts.yaml`` reads it);
- ``pairflow_monitor_last_window_end_seconds``: end of the window, Unix seconds.

Figures a skipped window does not have are not exported (absent, not zero).
"""

from __future__ import annotations

from datetime import datetime

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

from pairflow.errors import PairflowError
from pairflow.stages.monitor.settings import MonitorConfig
from pairflow.stages.monitor.verdict import WindowVerdict

JOB = "pairflow-monitor"
LABELS = ("model_name", "model_version")


class GaugePushError(PairflowError):
    """The Pushgateway did not take the window's gauges."""


def build_registry(verdict: WindowVerdict, consecutive: int) -> CollectorRegistry:
    """A fresh registry holding this window's gauges."""
    if consecutive < 0:
        raise ValueError(f"consecutive drift windows must be >= 0, got {consecutive}")
    reg = CollectorRegistry()
    labels = {
        "model_name": verdict.window.model_name,
        "model_version": verdict.window.model_version,
    }

    def gauge(name: str, doc: str, value: float | None) -> None:
        if value is not None:
            Gauge(name, doc, LABELS, registry=reg).labels(**labels).set(value)

    end = datetime.fromisoformat(verdict.window.end.replace("Z", "+00:00"))
    gauge("pairflow_monitor_window_rows", "Pairs in the judged window.", verdict.rows)
    gauge("pairflow_monitor_judged", "1 when the window was judged.", float(verdict.judged))
    gauge(
        "pairflow_monitor_last_window_end_seconds",
        "End of the last window judged (Unix seconds).",
        end.timestamp(),
    )
    if verdict.judged:
        gauge(
            "pairflow_monitor_drift_share",
            "Share of drifted metadata columns.",
            verdict.drift_share,
        )
        gauge(
            "pairflow_monitor_score_drop",
            "Reference minus window mean pair score.",
            verdict.score_drop,
        )
        gauge("pairflow_monitor_drift_detected", "1 when the window drifted.", float(verdict.drift))
        auc = Gauge(
            "pairflow_monitor_embedding_auc",
            "Domain-classifier ROC AUC, reference vs window embeddings.",
            (*LABELS, "tower"),
            registry=reg,
        )
        for tower, value in sorted(verdict.embedding_auc.items()):
            auc.labels(**labels, tower=tower).set(value)
    gauge(
        "pairflow_monitor_consecutive_drift_windows",
        "Judged windows in a row with drift (current champion).",
        float(consecutive),
    )
    return reg


def push_gauges(verdict: WindowVerdict, consecutive: int, cfg: MonitorConfig) -> None:
    """Push this window's gauges to ``cfg.pushgateway_url`` (nothing when it is empty).

    The group is (job, model_name): each push replaces the model's previous figures. A
    gateway that is down or refuses the push is a :class:`GaugePushError` naming it (the
    verdict is already recorded in MLflow by then).
    """
    reg = build_registry(verdict, consecutive)
    if not cfg.pushgateway_url:
        return
    try:
        push_to_gateway(
            cfg.pushgateway_url,
            job=JOB,
            registry=reg,
            grouping_key={"model_name": verdict.window.model_name},
            timeout=10,
        )
    except OSError as exc:  # URLError and HTTPError are OSErrors
        raise GaugePushError(
            f"monitor.pushgateway_url {cfg.pushgateway_url}: pushing the gauges of window "
            f"{verdict.window.key} failed ({type(exc).__name__}: {exc})"
        ) from exc
