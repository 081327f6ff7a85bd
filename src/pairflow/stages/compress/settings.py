"""Config section of this stage (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pairflow.config_fields import Section, ui


class StudentConfig(Section):
    """Shape and training of the distilled student; unset sizes are the teacher's times the
    factors. The default keeps the teacher's width (student layers start as exact copies of
    teacher layers) and the vision tower's depth (on the demo data a 1-layer vision tower lost
    about half the teacher's recall@1, a 1-layer text tower almost none), halves the text
    tower's depth and keeps the most important 1/8 of every MLP's neurons: under half the
    parameters."""

    width_factor: float = Field(1.0, gt=0, le=1, description="Hidden size = teacher's x this.")
    layer_factor: float = Field(0.5, gt=0, le=1, description="Layers = teacher's x this (>= 1).")
    vision_layer_factor: float | None = Field(
        1.0, gt=0, le=1, description="Vision tower's layer factor (None: layer_factor)."
    )
    text_layer_factor: float | None = Field(
        None, gt=0, le=1, description="Text tower's layer factor (None: layer_factor)."
    )
    mlp_factor: float = Field(
        0.125, gt=0, le=1, description="MLP size = teacher's (scaled to the width) x this."
    )
    vision_mlp_factor: float | None = Field(
        None, gt=0, le=1, description="Vision tower's MLP factor (unset: mlp_factor)."
    )
    text_mlp_factor: float | None = Field(
        None, gt=0, le=1, description="Text tower's MLP factor (unset: mlp_factor)."
    )
    hidden_size: int | None = Field(None, ge=8, description="Explicit hidden size (both towers).")
    num_layers: int | None = Field(None, ge=1, description="Explicit layers per tower.")
    num_heads: int | None = Field(
        None, ge=1, description="Attention heads; default keeps the teacher's head size."
    )
    intermediate_size: int | None = Field(None, ge=8, description="Explicit MLP size.")
    init_from_teacher: bool = Field(
        True,
        description="Start from the teacher's weights: spread subset of its layers, its most "
        "important MLP neurons, its embeddings and projections (else random init).",
    )
    embedding_weight: float = Field(
        1.0,
        ge=0,
        description="CLIP students: weight of the cosine distance between the student's and "
        "the teacher's embeddings, added to the KD + contrastive loss.",
    )
    epochs: int = Field(30, ge=1, description="Distillation epochs.")
    learning_rate: float = Field(2e-3, gt=0, description="Peak AdamW learning rate.")
    batch_size: int = Field(32, ge=2)


class CompressConfig(Section):
    int8: bool = ui(True, "int8 quantization", "Build int8 ONNX Runtime variants.")
    distill: bool = ui(False, "Distillation", "Train a smaller student model.")
    selection: Literal["fastest", "smallest", "fp32_torch"] = ui(
        "fastest",
        "Variant selection",
        "Which variant ships: the fastest (p50 at the selection batch size) or the smallest "
        "among those within the recall drop, or always the fp32 torch model.",
    )
    max_recall_drop: float = ui(
        0.01,
        "Max recall@1 drop",
        "Variants losing more held-out recall@1 (or accuracy) than this vs fp32 are not chosen.",
        ge=0,
        le=1,
    )
    selection_batch_size: int = Field(32, ge=1, description="Batch size whose p50 ranks speed.")
    max_slowdown_vs_champion: float | None = Field(
        0.1,
        ge=0,
        description="Latency budget: with a champion, a variant ships only if its p50 at the "
        "selection batch size is at most the champion's (measured interleaved with the "
        "variants) x (1 + this); None: no budget.",
    )
    on_latency_budget_miss: Literal["stop", "canary"] = Field(
        "stop",
        description="When no variant fits the latency budget: 'stop' fails compress (nothing "
        "is registered or deployed; the variant table says why); 'canary' ships the fastest "
        "eligible variant with the budget recorded as not met, for the canary to judge.",
    )
    parity_min_cosine: float = Field(
        0.999, gt=0, le=1, description="Min cosine of ONNX vs torch embeddings, per row."
    )
    parity_logit_tolerance: float = Field(
        1e-3,
        gt=0,
        description="Classifiers: max |ONNX - torch| logit difference, relative to "
        "max(1, |logits|); argmax must also be identical on every held-out row.",
    )
    calibration_source: Literal["holdout", "train"] = Field(
        "holdout", description="Rows whose images calibrate static int8 activation ranges."
    )
    calibration_size: int = Field(64, ge=1, description="Calibration images (at most).")
    static_vision: bool = Field(
        True, description="Also build a variant with a statically quantized vision tower."
    )
    per_channel: bool = Field(False, description="Per-channel int8 weights.")
    int8_op_types: list[str] = Field(
        default_factory=lambda: ["MatMul", "Gemm", "Gather"],
        description="Ops whose weights go int8 (Gather: the token embedding table).",
    )
    kd_temperature: float = ui(2.0, "KD temperature", "Softening of distilled logits.", gt=0)
    kd_alpha: float = ui(
        0.5, "KD alpha", "Weight of the KD loss (1 - alpha on the contrastive/CE loss).", ge=0, le=1
    )
    student: StudentConfig = Field(default_factory=StudentConfig)
    latency_batch_sizes: list[int] = Field(default_factory=lambda: [1, 32])
    latency_threads: int = Field(2, ge=1, description="intra-op threads for latency runs.")
    latency_repeats: int = Field(20, ge=3, description="Timed calls per variant and batch size.")
    eval_max_rows: int = Field(2000, ge=2, description="Held-out rows scored per variant.")

    @model_validator(mode="after")
    def _batch_sizes(self) -> CompressConfig:
        if not self.latency_batch_sizes or min(self.latency_batch_sizes) < 1:
            raise ValueError("compress.latency_batch_sizes: give one or more sizes >= 1")
        if self.selection_batch_size not in self.latency_batch_sizes:
            raise ValueError("compress.selection_batch_size must be one of latency_batch_sizes")
        return self
