"""The ``validate`` section: per-row checks and the dataset-level data contract."""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, model_validator

from pairflow.config_fields import Section, ui

ImageFormat = Literal["JPEG", "PNG", "WEBP"]


class ContractConfig(Section):
    """Dataset-level Great Expectations contract, checked on all validated rows together."""

    min_rows: int = ui(10, "Min rows", "Fewer kept rows than this fails the step.", ge=1)
    max_reject_share: float = ui(
        0.5, "Max reject share", "A larger share of rejected rows fails the step.", ge=0, le=1
    )
    max_null_share: dict[str, float] = Field(
        default_factory=lambda: {"id": 0.0, "image": 0.0, "caption": 0.0},
        description="Per column: the largest share of nulls tolerated among kept rows.",
    )
    allowed_sources: list[str] | None = Field(
        None, description="Value set for the 'source' column; None skips the expectation."
    )
    caption_chars_mean: tuple[float, float] = Field(
        (5.0, 300.0), description="Bounds on the mean caption length (characters)."
    )
    caption_chars_p95_max: float = Field(
        500.0, description="Upper bound on the 95th percentile of caption length."
    )


class ValidateConfig(Section):
    """Per-row checks; every failure is a rejected row with a reason code and a detail."""

    allowed_formats: list[ImageFormat] = Field(default_factory=lambda: list(get_args(ImageFormat)))
    min_width: int = ui(16, "Min image width", "Images narrower than this are rejected.", ge=1)
    min_height: int = ui(16, "Min image height", "Images shorter than this are rejected.", ge=1)
    max_width: int = Field(8192, ge=1)
    max_height: int = Field(8192, ge=1)
    max_aspect_ratio: float = Field(4.0, ge=1.0, description="max(w/h, h/w) allowed.")
    max_pixels: int = Field(
        40_000_000, ge=1, description="Declared w*h above this is rejected before decoding."
    )
    max_file_bytes: int = Field(20_000_000, ge=1)
    min_caption_chars: int = ui(3, "Min caption length", "Shorter captions are rejected.", ge=0)
    max_caption_chars: int = Field(1000, ge=1)
    min_caption_tokens: int = Field(1, ge=0)
    max_caption_tokens: int = Field(77, ge=1, description="CLIP's context length by default.")
    min_printable_ratio: float = Field(0.95, ge=0, le=1)
    min_letter_ratio: float = Field(
        0.5, ge=0, le=1, description="Share of letters and spaces among caption characters."
    )
    blocked_words: list[str] = Field(default_factory=list)
    allowed_labels: list[str] | None = Field(
        None, description="When set, rows whose label is not in the set are rejected."
    )
    workers: int = Field(0, ge=0, description="Decode processes per shard; 0 = CPU count.")
    contract: ContractConfig = Field(default_factory=ContractConfig)

    @model_validator(mode="after")
    def _bounds(self) -> ValidateConfig:
        if self.min_width > self.max_width or self.min_height > self.max_height:
            raise ValueError("validate: min width/height must not exceed max")
        if self.min_caption_chars > self.max_caption_chars:
            raise ValueError("validate: min_caption_chars must not exceed max_caption_chars")
        return self
