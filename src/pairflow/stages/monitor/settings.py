"""Config section of the monitor (assembled into ``pairflow.config.PairflowConfig``).

One section for the whole loop: what the predictor logs, where the sink writes, how a
window is judged, and the guardrails of the retrain trigger.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pairflow.config_fields import Section


class MonitorConfig(Section):
    """Served traffic: request logging, drift on a window, guarded retrain trigger."""

    # -- logging (predictor + sink) -------------------------------------------------------
    sample_rate: float = Field(
        0.25,
        ge=0,
        le=1,
        description="Share of requests the predictor marks for logging (decided per request id, "
        "so a request and its response are kept or dropped together).",
    )
    sink_url: str = Field(
        "",
        description="Local runs: URL of `pairflow monitor-sink` that `pairflow serve` posts "
        "CloudEvents to, as KServe's payload logger does on a cluster; empty: no logging.",
    )
    log_prefix: str = Field(
        "",
        description="Where the sink writes batched Parquet (and image bytes): an s3:// prefix or "
        "a local folder, partitioned dt=YYYY-MM-DD/hour=HH.",
    )
    store_images: bool = Field(
        True, description="The sink stores sampled images' bytes, so a retrain can read them."
    )
    flush_rows: int = Field(256, ge=1, description="The sink writes a Parquet part at this size.")
    flush_seconds: float = Field(
        30.0, gt=0, description="... or when its oldest buffered row is this old."
    )
    max_buffer_rows: int = Field(
        20_000,
        ge=1,
        description="Rows the sink holds while storage is down; beyond it rows are dropped "
        "and counted (pairflow_monitor_sink_dropped_total), never blocking a prediction.",
    )
    # -- drift on a window -----------------------------------------------------------------
    window_hours: float = Field(24.0, gt=0, description="Length of the window judged.")
    min_window_rows: int = Field(
        200, ge=1, description="Smaller windows are not judged (recorded as skipped)."
    )
    drift_share: float = Field(
        0.5, gt=0, le=1, description="Share of drifted metadata columns that is drift."
    )
    embedding_auc: float = Field(
        0.8,
        gt=0.5,
        le=1,
        description="Domain-classifier ROC AUC (reference vs window embeddings) above which "
        "the embeddings have drifted. Calibrated by bench/monitor_drift_accuracy.py (20 "
        "windows of 200 pairs an arm): same-distribution windows served by the int8 variant "
        "reach 0.74 at most (the int8 text tower alone gives 0.70 against fp32 on identical "
        "rows), a new source's windows 0.91 at least.",
    )
    score_drop_margin: float = Field(
        0.05,
        ge=0,
        description="A window whose mean pair score is lower than the reference's by more "
        "than this triggers a retrain even without drift.",
    )
    experiment: str = Field(
        "pairflow-monitor", description="MLflow experiment of monitor runs (report + verdict)."
    )
    pushgateway_url: str = Field(
        "", description="Prometheus Pushgateway the monitor pushes its gauges to; empty: none."
    )
    # -- trigger ---------------------------------------------------------------------------
    trigger: bool = Field(True, description="Submit a retrain when the policy says so.")
    cooldown_hours: float = Field(
        24.0, ge=0, description="At most one triggered retrain per this many hours."
    )
    retrain_data: Literal["window", "window+previous"] = Field(
        "window+previous",
        description="The triggered run's data: the logged window alone, or merged with the "
        "champion's training snapshot.",
    )
