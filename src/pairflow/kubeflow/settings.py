"""Config section of this stage (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pairflow.config_fields import Section

# The runtime image (images/runtime) as the release workflow pushes it: this repository name,
# tagged with the package version (pyproject.toml). On release the workflow compiles the package
# it uploads with kubeflow.base_image pinned to the pushed digest (.github/workflows/release.yml).
RUNTIME_IMAGE_REPO = "ghcr.io/pairflow/pairflow-runtime"
RUNTIME_IMAGE_TAG = "0.1.0"

# Names of the objects the pipeline pods read, compiled into the package with kfp-kubernetes
# (pipelines/retrain.py) and defined in manifests/base/pipeline-env.yaml (tests assert equality).
PIPELINE_ENV_CONFIG_MAP = "pairflow-pipeline-env"
S3_CREDENTIALS_SECRET = "pairflow-s3"
MLFLOW_CLIENT_SECRET = "pairflow-mlflow-client"


class KubeflowConfig(Section):
    base_image: str = Field(
        f"{RUNTIME_IMAGE_REPO}:{RUNTIME_IMAGE_TAG}",
        description="Image every component runs in on a cluster (images/runtime: pairflow + kfp); "
        "the release workflow pins it by digest.",
    )
    env_config_map: str = Field(
        PIPELINE_ENV_CONFIG_MAP,
        description="ConfigMap whose keys become every step's env (MLFLOW_TRACKING_URI, "
        "AWS_ENDPOINT_URL, AWS_DEFAULT_REGION).",
    )
    s3_secret: str = Field(
        S3_CREDENTIALS_SECRET,
        description="Secret with AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, env of every step.",
    )
    mlflow_secret: str = Field(
        MLFLOW_CLIENT_SECRET,
        description="Secret with MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (MLflow "
        "basic auth), env of every step.",
    )
    io_retries: int = Field(
        3,
        ge=0,
        description="KFP task retries of the I/O-bound steps (S3, MLflow, Kubernetes): the whole "
        "step runs again. The one retry layer above a single call's own retries (MLflow HTTP "
        "requests: mlflow.http_*; S3: botocore's standard mode; image reads: "
        "clip_filter.read_retries).",
    )
    io_retry_backoff_s: int = Field(
        15, ge=1, description="First task retry delay; doubles on each further retry."
    )
    local_io_retries: int = Field(
        1,
        ge=0,
        description="io_retries of local runs (kfp.local, 2 s first delay): fail fast while "
        "iterating.",
    )
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
