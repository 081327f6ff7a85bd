"""The ``data`` section: where the raw pairs are, how they are read and sharded, and S3."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pairflow.config_fields import Section, ui


class S3Config(Section):
    endpoint_url: str | None = ui(
        None,
        "S3 endpoint URL",
        "S3-compatible endpoint (MinIO, moto); empty for AWS S3. Credentials come from the "
        "environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a role), never from config.",
    )
    region: str = "us-east-1"


class DataConfig(Section):
    source: str = ui(
        "",
        "Data source",
        "Where the raw pairs are: a folder of images + captions, a .parquet/.jsonl manifest, a "
        "folder of WebDataset .tar shards, or an s3:// URI of any of these.",
    )
    format: Literal["auto", "folder", "parquet", "jsonl", "webdataset"] = ui(
        "auto", "Source format", "How to read the source; 'auto' decides from the URI."
    )
    shards: int = ui(
        2,
        "Shards",
        "Number of shards the data stages fan out over (dsl.ParallelFor).",
        ge=1,
        le=256,
    )
    s3: S3Config = Field(default_factory=S3Config)
    ground_truth: str = Field(
        "",
        description="Known-defect table of synthetic data (ground_truth.parquet); when set, "
        "reports measure against it (e.g. clip-filter ROC-AUC). `pairflow demo` sets it.",
    )
