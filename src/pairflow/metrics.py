"""The typed ``metrics`` of each stage's report (``StageReport.metrics``).

One model per stage, with the keys its step writes today (the JSON keys are unchanged, so
``report.json``, the MLflow run's ``<stage>.<figure>`` metrics and ``reports/<stage>.json``
stay as they were). A stage builds its model and stores :meth:`StageMetrics.to_json` in its
report; a reader (the run summary, the stage CLIs, the model card, register) takes
``report.metrics_as(EvaluateMetrics)`` and reads fields, not string keys.

Unknown keys are kept, not rejected (``extra="allow"``): a report written by another
pairflow version still reads, and nothing reads such a key by name. A declared key whose
value has the wrong shape fails with :class:`MetricsError`, naming the stage and the field.
Fields a stage does not always write (ROC-AUC only with ground truth, the champion only
when there is one, a deploy that stopped before its canary) are optional.

Light imports only (pydantic): the CLI reads these.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pairflow.errors import InputDataError

# A figure a stage wrote as an int or a float: kept as written (a plain ``float`` field
# would turn 3 into 3.0 in report.json).
Number = int | float


class MetricsError(InputDataError):
    """A stage report whose metrics do not match its stage's model."""


class _Metrics(BaseModel):
    """Common config: unknown keys kept, fields by name or by their JSON key."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    def to_json(self) -> dict[str, Any]:
        """The JSON form: the keys that were given (or read), by their JSON names."""
        return self.model_dump(by_alias=True, exclude_unset=True)


class StageMetrics(_Metrics):
    """Base of the per-stage models (see :data:`STAGE_METRICS`)."""


# ---------------------------------------------------------------------------------------------
# data stages


class IngestMetrics(StageMetrics):
    source: str | None = None  # what was read
    format: str | None = None  # the reader actually used
    sources: dict[str, int] = Field(default_factory=dict)  # input rows per ``source`` value
    shards: int | None = None


class ContractSummary(_Metrics):
    """The data contract's outcome (:meth:`ContractResult.to_json_dict`)."""

    passed: bool
    failed_critical: list[str] = Field(default_factory=list)
    failed_warnings: list[str] = Field(default_factory=list)
    # one dict per expectation; ``observed`` and ``details`` are whatever GX reports
    outcomes: list[dict[str, Any]] = Field(default_factory=list)
    docs_index: str | None = None
    html: str | None = None
    seconds: Number | None = None
    rows: dict[str, int] = Field(default_factory=dict)


class ValidateMetrics(StageMetrics):
    """A shard's (or the standalone command's) throughput; the merged report's shard count
    and data contract."""

    workers: int | None = None
    rows_per_s: Number | None = None
    shards: int | None = None
    contract: ContractSummary | None = None


class DedupeMetrics(StageMetrics):
    rows_in: int | None = None
    rows_out: int | None = None
    seconds: Number | None = None
    # one dict per pass that ran (groups found, rows dropped, timings, pass-specific knobs);
    # its keys differ per pass and only the dedupe bench reads them
    exact: dict[str, Any] | None = None
    near: dict[str, Any] | None = None
    captions: dict[str, Any] | None = None
    near_captions: dict[str, Any] | None = None
    semantic: dict[str, Any] | None = None
    shards: int | None = None


class ClipFilterMetrics(StageMetrics):
    """A shard's scoring figures, or the gather step's (shards, global quantiles, ROC-AUC)."""

    mode: str | None = None
    threshold: Number | None = None
    top_fraction: Number | None = None
    cut: Number | None = None
    source_thresholds: dict[str, Number] | None = None
    score_quantiles: dict[str, Number] | None = None
    scored: int | None = None
    unscored: int | None = None
    rows_per_s: Number | None = None
    score_seconds: Number | None = None
    load_seconds: Number | None = None
    batch_size: int | None = None
    workers: int | None = None
    torch_threads: int | None = None
    device: str | None = None
    model_ref: str | None = None
    model_digest: str | None = None
    # only with ground truth (data.ground_truth): mismatched captions vs clean pairs
    roc_auc: Number | None = None
    auc_positives: int | None = None
    auc_negatives: int | None = None
    seconds: Number | None = None
    shards: int | None = None


# ---------------------------------------------------------------------------------------------
# model stages


class EpochFigures(_Metrics):
    """One epoch's validation figures. Their names depend on the model kind (recall@k for
    CLIP, accuracy for a classifier), so all but the common ones are extra numbers."""

    __pydantic_extra__: dict[str, Number | None] = Field(init=False)

    epoch: Number | None = None
    val_loss: Number | None = None
    val_metric: Number | None = None


class TrainMetrics(StageMetrics):
    """What train did (``rows_train + rows_val + rows_holdout`` = the report's rows_in)."""

    model: str
    fusion: str | None
    launcher: str
    base_model: str
    rows_train: int
    rows_val: int
    rows_holdout: int
    world_size: int
    samples_per_s: Number
    epochs: int
    steps: int
    best_val_metric: Number | None
    best_epoch: int | None
    stopped_early: bool
    bad_steps: int
    resumed_from_step: int | None
    checkpoint: str | None
    val: EpochFigures  # the last epoch's validation figures
    step_seconds: dict[str, Number]  # where a training step's time went
    train_seconds: Number


class Scores(_Metrics):
    """A model's held-out figures. Their names depend on the model kind, the configured
    recall@k and the class names, so all but the headline ones are extra keys (each a
    number, or null where it was not finite): read them with :meth:`get`."""

    __pydantic_extra__: dict[str, Number | None] = Field(init=False)

    i2t_recall_at_1: Number | None = None
    t2i_recall_at_1: Number | None = None
    accuracy: Number | None = None

    def get(self, name: str) -> Number | None:
        """The figure called ``name`` (a gated metric's name, from its check), or None."""
        if name in type(self).model_fields:
            value: Number | None = getattr(self, name)
            return value
        return (self.model_extra or {}).get(name)

    def __contains__(self, name: str) -> bool:
        """Whether the figure was written (even as null), as for the JSON object."""
        return name in self.model_fields_set or name in (self.model_extra or {})


class Champion(_Metrics):
    """The champion evaluate compared with."""

    uri: str | None = None
    version: str | None = None
    run_id: str | None = None
    metrics: Scores = Field(default_factory=Scores)


class Gate(_Metrics):
    """The gate's decision (also logged as ``evaluate/gate.json``)."""

    passed: bool
    enforced: bool = True
    reasons: list[str] = Field(default_factory=list)
    # one dict per check; its keys depend on the check's kind (floor, non_inferiority,
    # finite, drift, latency, report: see stages/evaluate/gate.py), and the card and the
    # registry's decision view render each kind's own keys
    checks: list[dict[str, Any]] = Field(default_factory=list)


class DriftSummary(_Metrics):
    """Drift between the champion's reference and this run's rows (``detected`` None:
    skipped, see ``reasons``)."""

    skipped: bool | None = None
    detected: bool | None = None
    drifted_share: Number | None = None
    drifted_count: Number | None = None
    drifted_columns: list[str] = Field(default_factory=list)
    column_p_values: dict[str, Number | None] = Field(default_factory=dict)
    column_distances: dict[str, Number | None] = Field(default_factory=dict)
    embedding_auc_image: Number | None = Field(default=None, alias="embedding_auc.image")
    embedding_auc_text: Number | None = Field(default=None, alias="embedding_auc.text")
    reference_rows: int | None = None
    current_rows: int | None = None
    seconds: Number | None = None
    reasons: list[str] = Field(default_factory=list)


class EvaluateMetrics(StageMetrics):
    kind: str | None = None
    train_rows: int | None = None
    holdout_rows: int | None = None
    evaluated_rows: int | None = None
    classes: list[str] = Field(default_factory=list)
    candidate: Scores = Field(default_factory=Scores)
    champion: Champion | None = None
    # metric -> its bootstrap comparison with the champion (delta, interval, confidence, n,
    # ...); the card renders each as a cell, whatever the interval's keys
    deltas: dict[str, dict[str, Any]] = Field(default_factory=dict)
    gate: Gate | None = None
    drift: DriftSummary | None = None
    model_ref: str | None = None
    model_digest: str | None = None
    reference_embeddings: str | None = None
    # the serving reference's description (path, rows, roles): only written, never read
    serving_reference: dict[str, Any] | None = None
    notes: list[str] | None = None


class LatencyBudget(_Metrics):
    """Compress's latency budget against the champion (``Choice.budget``)."""

    champion_p50_ms: Number | None = None
    max_slowdown: Number | None = None
    limit_ms: Number | None = None
    batch_size: int | None = None
    met: bool = False
    chosen_p50_ms: Number | None = None  # only when the budget decided the choice


class Selection(_Metrics):
    """How compress chose (``variants.json``'s ``selection``)."""

    rule: str | None = None
    metric: str | None = None
    max_recall_drop: Number | None = None
    batch_size: int | None = None
    chosen: str | None = None
    reason: str | None = None
    eligible: list[str] = Field(default_factory=list)
    latency_budget: LatencyBudget | None = None
    # batch size -> {p50_ms, p95_ms, ...} of the champion, timed with the variants
    champion_latency_ms: dict[str, dict[str, Any]] | None = None


class VariantFigures(_Metrics):
    """One variant's figures. The per-batch ones (``p50_ms_b<n>``, ``p95_ms_b<n>``,
    ``speedup_b<n>``) are keyed by the configured batch sizes, so they are extra keys, read
    with :meth:`speedup`; the quality metric is recall@1 or a classifier's accuracy."""

    __pydantic_extra__: dict[str, Number | None] = Field(init=False)

    size_bytes: int | None = None
    size_ratio: Number | None = None
    params: int | None = None
    throughput_pairs_per_s: Number | None = None
    recall_at_1: Number | None = None
    recall_delta: Number | None = None
    accuracy: Number | None = None
    accuracy_delta: Number | None = None

    def speedup(self, batch_size: int) -> Number | None:
        """How many times faster than fp32 torch at ``batch_size`` (None: not timed)."""
        return (self.model_extra or {}).get(f"speedup_b{batch_size}")


class CompressMetrics(StageMetrics):
    chosen: str | None = None
    task: str | None = None
    selection: Selection | None = None
    held_out_rows: int | None = None
    calibration_rows: int | None = None
    # the student's fit (losses, steps, seconds): free-form, only written
    distill: dict[str, Any] = Field(default_factory=dict)
    # how latency was timed (threads, warmup, repeats...): free-form, only written
    latency_setup: dict[str, Any] = Field(default_factory=dict)
    variants: dict[str, VariantFigures] = Field(default_factory=dict)


class RegisterMetrics(StageMetrics):
    registered_version: str  # models:/NAME/VERSION
    model_name: str
    version: str
    gate: str  # passed / failed / not_enforced / unknown
    challenger: bool
    reused: bool
    mlflow_run_id: str
    model_id: str


class DeployMetrics(StageMetrics):
    """The canary's decision and how it got there. ``decision`` is absent when the
    candidate already was the champion (nothing to decide)."""

    decision: str | None = None
    reasons: list[str] = Field(default_factory=list)
    model: str | None = None
    candidate_version: str | None = None
    stable_version: str | None = None
    backend: str | None = None
    steps_planned: list[int] | None = None
    mode: str | None = None  # smoke (first deploy) or canary
    # one dict per traffic step: weight, verdict, reasons and the step's analysis (counts,
    # per-metric tests, quality): rendered by the deploy summary's step table
    steps: list[dict[str, Any]] = Field(default_factory=list)
    # the alias change (champion, previous, unchanged, ...) as the registry reported it
    aliases: dict[str, Any] | None = None
    canary_seconds: Number | None = None
    # the local backend
    router: str | None = None
    upstreams: dict[str, str] | None = None
    client: dict[str, Any] | None = None  # replay client counts (sent, ok, failed, ...)
    # the KServe backend
    inference_service: str | None = None
    prometheus: str | None = None
    candidate_model_uri: str | None = None
    window_min_s: Number | None = None


# The model of each stage's metrics, by the stage name a report carries.
STAGE_METRICS: dict[str, type[StageMetrics]] = {
    "ingest": IngestMetrics,
    "validate": ValidateMetrics,
    "dedupe": DedupeMetrics,
    "clip_filter": ClipFilterMetrics,
    "train": TrainMetrics,
    "evaluate": EvaluateMetrics,
    "compress": CompressMetrics,
    "register": RegisterMetrics,
    "deploy": DeployMetrics,
}

M = TypeVar("M", bound=StageMetrics)


def _where(loc: tuple[int | str, ...]) -> str:
    return ".".join(["metrics", *(str(part) for part in loc)])


def parse_metrics(stage: str, metrics: dict[str, Any], model: type[M]) -> M:
    """``metrics`` of a ``stage`` report as ``model``; :class:`MetricsError` naming the stage
    and the field when they do not match."""
    expected = STAGE_METRICS.get(stage)
    if expected is not None and expected is not model:
        raise MetricsError(
            f"stage {stage!r} report: its metrics are {expected.__name__}, not {model.__name__}"
        )
    try:
        return model.model_validate(metrics)
    except ValidationError as exc:
        problems = "; ".join(f"{_where(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise MetricsError(
            f"stage {stage!r} report: metrics do not match {model.__name__} ({problems})"
        ) from None


def check_metrics(stage: str, metrics: dict[str, Any]) -> None:
    """Raise :class:`MetricsError` unless ``metrics`` match ``stage``'s model (a stage with
    no model, such as a test's, passes)."""
    model = STAGE_METRICS.get(stage)
    if model is not None:
        parse_metrics(stage, metrics, model)
