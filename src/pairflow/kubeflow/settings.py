"""Config section of this stage (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from pydantic import Field

from pairflow.config_fields import Section


class KubeflowConfig(Section):
    base_image: str = Field(
        "python:3.11-slim",
        description="Image the components run in on a cluster (the runtime image, by digest).",
    )
    io_retries: int = Field(3, ge=0, description="Retries of I/O-bound steps (S3, MLflow, k8s).")
    io_retry_backoff_s: int = Field(15, ge=1, description="First retry delay; doubles each time.")
    pipeline_name: str = "retrain"
    experiment: str = "pairflow"
    host: str = ""
