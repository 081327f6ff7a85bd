"""The ``data`` section: where the raw pairs are, how they are read and sharded, S3, and the
held-out split every stage uses."""

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


# The salt of the held-out split (``data.split.salt``); kept here, free of numpy/pandas, so that
# config loading stays light (:mod:`pairflow.data.split` computes the split).
DEFAULT_SALT = "pairflow-holdout-v1"


class SplitConfig(Section):
    """The one held-out split (:mod:`pairflow.data.split`): a row is held out when the hash of
    its ``id`` (with ``salt``) falls below ``holdout_fraction``, so the split is the same in
    every stage, shard and run. Train never sees these rows; evaluate, compress and register
    (dataset lineage) measure or record exactly them, and the deploy canary replays them.
    Train's early-stopping rows (``train.val_fraction``) are carved from the other rows."""

    holdout_fraction: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="Share of ids held out from training, for every stage (evaluate, compress, "
        "register's lineage, the canary replay).",
    )
    salt: str = Field(
        DEFAULT_SALT,
        min_length=1,
        description="Hash salt of the split: changing it re-draws the hold-out, which "
        "invalidates comparisons with champions evaluated on the old one.",
    )


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
    split: SplitConfig = Field(default_factory=SplitConfig)
    ground_truth: str = Field(
        "",
        description="Known-defect table of synthetic data (ground_truth.parquet); when set, "
        "reports measure against it (e.g. clip-filter ROC-AUC). `pairflow demo` sets it.",
    )
