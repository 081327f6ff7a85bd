"""Config section of this stage (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from pairflow.config_fields import Section, ui
from pairflow.kubeflow import names

MetricName = Literal["error_rate", "latency_p95", "quality"]


class AnalysisConfig(Section):
    """How one canary step is judged: candidate against stable over the same time window."""

    alpha: float = ui(
        0.05,
        "Canary alpha",
        "Family-wise false-rollback level of the whole rollout: each analysed step tests at "
        "alpha / steps, Holm-corrected across its metrics.",
        gt=0,
        lt=1,
    )
    power: float = Field(
        0.9,
        ge=0.5,
        lt=1,
        description="Power a step's window must have to detect each metric's minimum effect; "
        "a smaller window is inconclusive (extended, then failed), never a pass.",
    )
    fail_fast_alpha: float = Field(
        0.001,
        gt=0,
        lt=1,
        description="Stricter level for interim looks during a bake (repeated looks inflate "
        "false positives); a regression below it stops the rollout before the bake ends.",
    )
    fail_fast_min_errors: int = Field(
        3, ge=1, description="Interim looks fail fast on errors only with at least this many."
    )
    metrics: list[MetricName] = Field(
        default_factory=lambda: list(get_args(MetricName)),
        description="Metrics compared; each is required: missing data for one fails the step.",
    )
    warmup_s: float = Field(
        0.5, ge=0, description="Requests in the first seconds of a step are not analysed."
    )
    min_error_rate_increase: float = Field(
        0.02,
        gt=0,
        description="Minimum effect on errors (absolute): the candidate's rate at "
        "max(min_error_rate_ratio x stable, stable + this) must be detected.",
    )
    min_error_rate_ratio: float = Field(
        2.0, gt=1, description="Minimum effect on errors (relative to stable's rate)."
    )
    max_error_rate: float = Field(
        0.2, gt=0, le=1, description="Absolute guard: a candidate error rate above it fails."
    )
    min_latency_exceedance: float = Field(
        0.08,
        gt=0,
        lt=0.95,
        description="Minimum effect on p95 latency: this much more of the candidate's "
        "requests slower than stable's p95 (stable has <= 5% there) must be detected.",
    )
    min_latency_increase: float = Field(
        0.25,
        ge=0,
        description="Practical guard: a latency failure also needs the candidate's p95 this "
        "much (relative) above stable's.",
    )
    min_latency_increase_ms: float = Field(
        5.0, ge=0, description="Practical guard: and this many ms above stable's p95."
    )
    min_quality_drop: float = Field(
        0.1,
        gt=0,
        lt=0.5,
        description="Minimum effect on quality: accuracy drop on the same requests against "
        "their reference answers (or disagreement with stable beyond this).",
    )
    inconclusive: Literal["extend", "fail"] = Field(
        "extend", description="Too few samples: extend the bake (up to max_extensions) or fail."
    )
    max_extensions: int = Field(2, ge=0, description="Bake extensions before an inconclusive fail.")
    slo_error_rate: float = Field(
        0.05,
        gt=0,
        lt=1,
        description="Smoke bake (first deploy, no champion): the candidate's error rate must "
        "be below this with 95% confidence (Clopper-Pearson upper bound).",
    )
    slo_latency_p95_ms: float = Field(
        1000.0,
        gt=0,
        description="Smoke bake: the candidate's p95 latency must be below this with 95% "
        "confidence (share of requests above it: upper bound < 5%).",
    )


class ReplayConfig(Section):
    """The local backend's replayer: held-out pairs sent as requests during each bake (the
    first readable rows, at most 256, of the one ``data.split`` hold-out that evaluate
    measured: rows train never saw)."""

    rate_per_s: float = Field(40.0, gt=0, description="Requests per second sent to the router.")
    concurrency: int = Field(4, ge=1, description="Requests in flight at most.")
    timeout_s: float = Field(10.0, gt=0, description="Client timeout of one replayed request.")
    image_px: int = Field(32, ge=8, le=512, description="Replayed images are resized to this.")
    task: Literal["auto", "rank", "classify"] = Field(
        "auto",
        description="Request shape: 'rank' (image + candidate captions; top-1 caption vs the "
        "true one), 'classify' (image; top-1 label vs the row's label), or 'auto' (classify "
        "when train.model is classifier, else rank).",
    )
    candidates: int = Field(
        4,
        ge=1,
        le=32,
        description="Captions per ranking request (the true one among held-out others); 1 "
        "sends plain pair scores, which give no paired quality comparison.",
    )
    variants: int = Field(
        8,
        ge=1,
        le=64,
        description="Ranking requests per held-out row, each with other distractor captions: "
        "more distinct requests for the paired quality comparison.",
    )
    path: str = Field(
        "/v1/models/pairflow:predict", description="Predictor endpoint the pairs are sent to."
    )


class LocalBackendConfig(Section):
    """Two predictor processes on 127.0.0.1 and a weighted router in front of them."""

    router_port: int = Field(0, ge=0, le=65535, description="0 picks a free port.")
    command: list[str] = Field(
        default_factory=list,
        description="Predictor command ({model_uri}, {port} substituted); empty: "
        "pairflow serve --model {model_uri} --port {port}.",
    )
    ready_path: str = Field(
        "/v2/models/pairflow/ready", description="200 here means a predictor is ready."
    )
    startup_timeout_s: float = Field(180.0, gt=0, description="Wait for a predictor to be ready.")
    failover: bool = Field(
        True,
        description="A request the candidate fails (5xx or connection error) is retried once "
        "on stable; the failure still counts against the candidate.",
    )


class KServeConfig(Section):
    """The kserve backend: an InferenceService in serverless mode and Prometheus."""

    namespace: str = ui(names.NAMESPACE, "KServe namespace", "Namespace of the InferenceService.")
    inference_service: str = ui(
        names.INFERENCE_SERVICE,
        "InferenceService name",
        "The InferenceService the canary patches (manifests/base/inferenceservice.yaml).",
    )
    prometheus_url: str = ui(
        "http://prometheus-operated.monitoring:9090",
        "Prometheus URL",
        "Prometheus HTTP API queried for per-version predictor metrics.",
    )
    model_uri_template: str = Field(
        "{model_uri}",
        description="MODEL_URI env of the predictor container for a revision ({model_uri} = "
        "models:/NAME/VERSION, {version} substituted); never an alias.",
    )
    scrape_interval_s: float = Field(
        names.SCRAPE_INTERVAL_S,
        gt=0,
        description="Prometheus scrape interval of the predictor (manifests' PodMonitor).",
    )
    min_window_scrapes: int = Field(
        4, ge=4, description="A window shorter than this many scrapes is not analysed."
    )
    served_model_name: str = Field(
        "pairflow",
        description="The predictor's served model name (its serve.model_name): the model_name "
        "label of its Prometheus series.",
    )
    ready_timeout_s: float = Field(600.0, gt=0, description="Wait for the canary revision.")
    query_timeout_s: float = Field(10.0, gt=0, description="Timeout of one Prometheus query.")


class DeployConfig(Section):
    backend: Literal["local", "kserve"] = ui("local", "Deploy backend", "local or kserve.")
    enabled: bool = ui(True, "Deploy", "Run the canary deploy after registration.")
    steps: list[int] = Field(
        default_factory=lambda: [10, 25, 50, 100],
        description="Candidate traffic percent per step; the last must be 100.",
    )
    bake_s: float = ui(
        20.0, "Canary bake time (s)", "Seconds each step runs before analysis.", gt=0
    )
    check_interval_s: float = Field(
        2.0, gt=0, description="Interim looks during a bake (fail fast on a clear regression)."
    )
    max_bake_s: float = Field(
        300.0,
        gt=0,
        description="Longest single bake extension: an inconclusive step extends by the time "
        "its missing sample needs at the observed rate, at most this.",
    )
    min_requests: int = ui(
        50,
        "Canary min requests",
        "Requests per backend a step needs before it can pass; fewer is inconclusive.",
        ge=1,
    )
    alias_champion: str = Field("champion", description="Alias of the stable model version.")
    first_deploy: Literal["smoke", "promote", "fail"] = Field(
        "smoke",
        description="No champion yet: 'smoke' bakes the candidate alone against the absolute "
        "SLOs (analysis.slo_*) and promotes only if it meets them; 'promote' promotes without "
        "any traffic (explicit opt-out); 'fail' refuses.",
    )
    analysis: AnalysisConfig = Field(default_factory=AnalysisConfig)
    replay: ReplayConfig = Field(default_factory=ReplayConfig)
    local: LocalBackendConfig = Field(default_factory=LocalBackendConfig)
    kserve: KServeConfig = Field(default_factory=KServeConfig)

    @model_validator(mode="after")
    def _check_steps(self) -> DeployConfig:
        if not self.steps or any(not 0 < s <= 100 for s in self.steps):
            raise ValueError("deploy.steps: each step must be a percent in (0, 100]")
        if self.steps != sorted(set(self.steps)) or self.steps[-1] != 100:
            raise ValueError("deploy.steps: strictly increasing and ending at 100")
        return self
