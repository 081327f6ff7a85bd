"""The ``clip_filter`` section: the CLIP model, the keep rule and batching."""

from __future__ import annotations

from pydantic import Field

from pairflow.config_fields import Section, ui


class ClipFilterConfig(Section):
    """Score pairs by CLIP image-text cosine; keep by threshold or top fraction."""

    model: str = ui(
        "",
        "CLIP model reference",
        "HF id, local directory, s3:// prefix or models:/NAME@ALIAS (required; `pairflow demo` "
        "sets its locally pretrained model).",
    )
    threshold: float = ui(
        0.28, "CLIP score threshold", "Keep pairs whose image-text cosine is at least this."
    )
    top_fraction: float = ui(
        0.0,
        "Keep top fraction",
        "If > 0, keep this fraction of best-scoring pairs instead of using the threshold.",
        ge=0.0,
        le=1.0,
    )
    source_thresholds: dict[str, float] = Field(
        default_factory=dict, description="Per-'source' thresholds overriding `threshold`."
    )
    batch_size: int = ui(64, "CLIP batch size", "Pairs per forward pass.", ge=1)
    num_workers: int = Field(2, ge=0, description="DataLoader workers decoding images.")
    torch_threads: int = Field(0, ge=0, description="Intra-op threads; 0 = all CPUs.")
    read_retries: int = Field(
        3,
        ge=0,
        description="Retries of one image read (local, s3://, tar member) on a transient read "
        "error, with backoff; a missing image is never retried. Per image, below the step's KFP "
        "retries (kubeflow.io_retries).",
    )
