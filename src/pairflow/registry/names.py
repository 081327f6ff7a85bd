"""Names shared by the registry modules: aliases, tags and artifact paths."""

from __future__ import annotations

# Where evaluate looks for the champion's drift reference (owned by pairflow.stages.evaluate).
from pairflow.registry.champion import DRIFT_REFERENCE_ARTIFACT as DRIFT_REFERENCE_ARTIFACT

# Where the drift monitor finds the champion's serving reference (owned by
# pairflow.stages.evaluate).
from pairflow.registry.champion import SERVING_REFERENCE_ARTIFACT as SERVING_REFERENCE_ARTIFACT

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS = "previous"

PREFIX = "pairflow."
TAG_KFP_RUN_ID = "pairflow.kfp_run_id"
TAG_KFP_RUN_NAME = "pairflow.kfp_run_name"
TAG_KFP_RUN_URL = "pairflow.kfp_run_url"
TAG_DATA_SNAPSHOT = "pairflow.data_snapshot"
TAG_CODE_VERSION = "pairflow.code_version"
TAG_CONFIG_HASH = "pairflow.config_hash"
TAG_GATE = "pairflow.gate"
TAG_GATE_REASONS = "pairflow.gate_reasons"
TAG_VARIANT = "pairflow.variant"
TAG_VARIANT_FORMAT = "pairflow.variant_format"
TAG_MODEL_DIGEST = "pairflow.model_digest"
TAG_APPROVAL = "pairflow.approval"
TAG_COMPLETE = "pairflow.complete"
METRIC_TAG_PREFIX = "pairflow.metric."
HISTORY_TAG_PREFIX = "pairflow.history."

GATE_PASSED = "passed"
GATE_FAILED = "failed"
GATE_NOT_ENFORCED = "not_enforced"
GATE_UNKNOWN = "unknown"

LOGGED_MODEL_NAME = "model"
ARTIFACT_ROOT = "pairflow"
