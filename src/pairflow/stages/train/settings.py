"""Config section of this stage (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pairflow.config_fields import Section, ui
from pairflow.kubeflow import names


class AugmentConfig(Section):
    """Training augmentation (torchvision transforms v2), kept consistent with captions."""

    crop_scale: tuple[float, float] = Field(
        (0.85, 1.0), description="RandomResizedCrop area range; (1, 1) disables cropping."
    )
    hflip: float = Field(
        0.5,
        ge=0,
        le=1,
        description="Probability of a horizontal flip; 'left'/'right' are swapped in the caption.",
    )
    brightness: float = Field(0.2, ge=0)
    contrast: float = Field(0.2, ge=0)
    saturation: float = Field(0.0, ge=0)
    hue: float = Field(
        0.0, ge=0, le=0.5, description="Hue jitter; never applied when a caption names a colour."
    )


class TrainJobConfig(Section):
    """Kubeflow Trainer v2 ``TrainJob`` settings (``train.launcher: trainjob``)."""

    namespace: str = Field(names.NAMESPACE, description="Namespace of the TrainJob.")
    runtime: str = Field(
        names.TRAINING_RUNTIME, description="ClusterTrainingRuntime name (manifests/base)."
    )
    image: str = Field("", description="Trainer image (by digest); empty: kubeflow.base_image.")
    nproc_per_node: int = Field(
        1,
        ge=1,
        description="Processes per node (TrainJob numProcPerNode); train.world_size must be a "
        "multiple: nodes = world_size / nproc_per_node.",
    )
    gpus_per_node: int = Field(0, ge=0)
    cpu: str = "2"
    memory: str = "8Gi"
    env: dict[str, str] = Field(default_factory=dict, description="Extra container env vars.")
    shared_dir: str = Field(
        "",
        description="Storage every node and the step reach: an s3:// prefix (the usual choice), "
        "or the mount path of a PVC that the runtime mounts in every trainer pod. Each job "
        "gets <shared_dir>/<job name>/ with inputs, checkpoints (resume), model and result.",
    )
    timeout_s: int = Field(3600, ge=1)
    poll_s: float = Field(10.0, gt=0)
    cleanup: bool = Field(True, description="Delete the TrainJob when it has finished.")
    name_prefix: str = "pairflow-train"


class TrainConfig(Section):
    model: Literal["clip", "classifier"] = ui("clip", "Model", "What to train.")
    base_model: str = ui(
        "",
        "Base model",
        "CLIP to start from: directory, s3:// prefix or models:/NAME@ALIAS; empty uses "
        "clip_filter.model, and if that is empty too a tiny CLIP built from config.",
    )
    epochs: int = ui(3, "Epochs", "Training epochs.", ge=1)
    batch_size: int = ui(32, "Batch size", "Per-rank batch size.", ge=2)
    learning_rate: float = ui(5e-4, "Learning rate", "Peak AdamW learning rate.", gt=0)
    world_size: int = ui(
        2, "Workers", "Training processes (torchrun nproc / TrainJob nodes).", ge=1
    )
    launcher: Literal["local", "trainjob"] = ui(
        "local", "Launcher", "local: torchrun subprocess; trainjob: Kubeflow Trainer TrainJob."
    )
    fusion: Literal["concat", "gated", "late", "cross_attention"] = ui(
        "concat", "Fusion head", "Classifier only: how image and text features are fused."
    )
    freeze_towers: bool = Field(False, description="Train only heads/adapters (and logit scale).")
    lora_rank: int = Field(0, ge=0, description="LoRA rank on q/k/v/out projections; 0 = off.")
    lora_alpha: float = Field(16.0, gt=0)
    balance_classes: bool = Field(False, description="Classifier: class-balanced sampling.")
    val_fraction: float = Field(
        0.15, gt=0, lt=1, description="Share of non-held-out rows used for early stopping."
    )
    weight_decay: float = Field(0.05, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, lt=1)
    grad_accum: int = Field(1, ge=1, description="Micro-batches per optimizer step.")
    max_grad_norm: float = Field(1.0, gt=0)
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="bf16 autocast (CPU/CUDA) or fp16 with GradScaler (CUDA only)."
    )
    patience: int = Field(2, ge=1, description="Epochs without improvement before stopping.")
    checkpoint_every: int = Field(20, ge=1, description="Optimizer steps between checkpoints.")
    checkpoint_dir: str = Field("", description="Empty: '<model dir>.checkpoints'.")
    keep_checkpoints: bool = Field(False, description="Keep checkpoints after success.")
    num_workers: int = Field(1, ge=0, description="DataLoader workers per rank.")
    prefetch_factor: int = Field(2, ge=1)
    torch_threads: int = Field(1, ge=0, description="Intra-op threads per rank; 0 = torch's.")
    log_every: int = Field(1, ge=1, description="Steps between MLflow metric points.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    trainjob: TrainJobConfig = Field(default_factory=TrainJobConfig)

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        lo, hi = self.augment.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError("train.augment.crop_scale must satisfy 0 < low <= high <= 1")
        return self
