"""Config section of this stage (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from typing import Literal

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
    namespace: str = Field(
        "",
        description="KFP user namespace (multi-user Kubeflow profile); empty for single-user.",
    )
    service_account: str = Field(
        "pairflow-pipeline",
        description="ServiceAccount pipeline pods run as (manifests/base/rbac.yaml).",
    )
    auth: Literal["auto", "token", "serviceaccount", "none"] = Field(
        "auto",
        description="KFP auth: 'token' reads $<token_env>; 'serviceaccount' the projected "
        "in-cluster token; 'auto' the first available of the two; 'none' for a port-forward.",
    )
    token_env: str = Field("KFP_TOKEN", description="Environment variable holding a KFP token.")
    schedule_name: str = Field(
        "pairflow-retrain", description="Display name of the recurring run `schedule` manages."
    )
    cron: str = Field(
        "0 0 3 * * *",
        description="Recurring run schedule: KFP cron with seconds (6 fields); 5 fields accepted.",
    )
    training_runtime: str = Field(
        "pairflow-torch",
        description="ClusterTrainingRuntime the train step's TrainJob references (manifests).",
    )
