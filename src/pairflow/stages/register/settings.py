"""Config section of this stage (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pairflow.config_fields import Section, ui

DEFAULT_INTENDED_USE = (
    "Scoring and retrieving image-caption pairs from the same distribution as the training "
    "data (image-text similarity, embeddings, zero-shot labels over the trained label set)."
)
DEFAULT_LIMITATIONS = [
    "Trained and evaluated only on the curated data named in this card; other domains are "
    "untested.",
    "Scores are cosine similarities, not calibrated probabilities.",
    "Captions longer than the text tower's context are truncated.",
]


class RegisterConfig(Section):
    model_name: str = ui("pairflow-clip", "Registered model", "MLflow registered model name.")
    policy: Literal["auto", "manual"] = ui(
        "auto",
        "Promotion policy",
        "auto: a passed gate lets the deploy step promote the version; manual: a reviewer's "
        "approval (pairflow registry approve) is also required.",
    )
    kfp_ui_url: str = Field(
        "", description="Kubeflow Pipelines UI base URL; when set, versions link to their run."
    )
    intended_use: str = Field(DEFAULT_INTENDED_USE, description="Model card: intended use.")
    limitations: list[str] = Field(
        default_factory=lambda: list(DEFAULT_LIMITATIONS), description="Model card: limitations."
    )
