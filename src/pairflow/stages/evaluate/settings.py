"""Config section of this stage (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pairflow.config_fields import Section, ui


class EvaluateConfig(Section):
    """Held-out metrics, champion comparison, the rollout gate and the drift report."""

    min_recall_at_1: float | None = Field(
        None,
        description="Floor on held-out image-to-text recall@1; unset: chance (1/held-out "
        "queries) + floor_over_chance x (1 - chance).",
        ge=0,
        le=1,
    )
    min_accuracy: float | None = Field(
        None,
        description="Floor on held-out accuracy (classifier; zero-shot accuracy for CLIP); "
        "unset: chance (majority class share) + floor_over_chance x (1 - chance).",
        ge=0,
        le=1,
    )
    floor_over_chance: float = ui(
        0.1,
        "Floor over chance",
        "Unset floors sit this share of the way from chance to perfect (Cohen's-kappa-like); "
        "every floored metric must also beat chance at the confidence level.",
        ge=0,
        lt=1,
    )
    require_above_chance: bool = Field(
        True,
        description="Every floored metric's lower confidence bound must beat chance. Turning "
        "it off is an explicit opt-out (plumbing tests with a model at chance); the gate's "
        "reasons say it is off.",
    )
    report_latency: bool = Field(
        True,
        description="With a champion, time the candidate (fp32, before compression) against "
        "the champion's shipped variant, interleaved at compress.selection_batch_size, and "
        "report it with the gate (not gated: compress enforces the latency budget).",
    )
    non_inferiority_margin: float = ui(
        0.01,
        "Non-inferiority margin",
        "Gate: lower 95% CI bound of (candidate - champion) must be >= -margin.",
        ge=0,
        le=1,
    )
    non_inferiority_metrics: list[str] = Field(
        default_factory=lambda: ["i2t_recall_at_1", "t2i_recall_at_1", "accuracy"],
        description="Per-query metrics compared with the champion (those the model kind has).",
    )
    bootstrap_samples: int = Field(2000, ge=100, description="Paired-bootstrap resamples.")
    confidence: float = Field(0.95, gt=0.5, lt=1, description="Bootstrap interval level.")
    recall_k: list[int] = Field(default_factory=lambda: [1, 5, 10], min_length=1)
    prompt_template: str = Field(
        "a {label}", description="Zero-shot prompt for a label ('{label}' is replaced)."
    )
    drift_policy: Literal["warn", "fail"] = ui(
        "warn", "Drift policy", "Drift above threshold: 'warn' (report only) or 'fail' the gate."
    )
    drift_share: float = Field(
        0.5, gt=0, le=1, description="Metadata drift: share of drifted columns that counts."
    )
    drift_column_p: float = Field(
        0.05, gt=0, lt=1, description="Per-column test p-value cut (categorical; KS)."
    )
    drift_numeric_method: Literal["wasserstein", "ks"] = Field(
        "wasserstein",
        description="Numeric columns: normed Wasserstein distance (robust on near-constant "
        "columns such as image sizes, where chi-square/KS p-values flag tiny shifts) or KS.",
    )
    drift_numeric_distance: float = Field(
        0.1, gt=0, description="Wasserstein (normed by the reference std) at or above this drifts."
    )
    embedding_drift_auc: float = Field(
        0.55,
        gt=0.5,
        le=1,
        description="Embedding drift: ROC AUC of a reference-vs-new classifier above this.",
    )
    max_drift_rows: int = Field(
        5000, ge=100, description="Rows sampled per side for the drift report."
    )
    serving_reference_train_rows: int = Field(
        256,
        ge=0,
        description="Training rows (beside all held-out rows) the candidate embeds for its "
        "serving reference, the drift monitor's baseline for served traffic.",
    )
    batch_size: int = Field(64, ge=1, description="Pairs per forward pass when embedding.")
    seed: int = Field(0, description="Seed of bootstrap and drift sampling.")
