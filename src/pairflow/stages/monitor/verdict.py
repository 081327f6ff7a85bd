"""What judging one window of logged traffic found: the contract between the drift
monitor (which fills it) and the retrain trigger (which decides on it). Every field is a
number or a reason that the decision record keeps."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class WindowId:
    """A window of logged traffic; ``key`` is the idempotency key of a triggered retrain."""

    start: str  # ISO 8601 UTC
    end: str  # ISO 8601 UTC
    model_name: str
    model_version: str

    @property
    def key(self) -> str:
        return f"{self.model_name}/{self.model_version}/{self.start}/{self.end}"


@dataclass
class WindowVerdict:
    """Drift and score figures of one window against the champion's reference."""

    window: WindowId
    rows: int
    reference_rows: int
    judged: bool  # false: too small / no reference; ``reasons`` says why
    drift: bool = False  # metadata drift share reached, or an embedding AUC above its limit
    drift_share: float | None = None
    drifted_columns: list[str] = field(default_factory=list)
    embedding_auc: dict[str, float] = field(default_factory=dict)  # image/text -> ROC AUC
    score_mean: float | None = None
    reference_score_mean: float | None = None
    score_drop: float | None = None  # reference mean - window mean
    score_dropped: bool = False  # score_drop > monitor.score_drop_margin
    reasons: list[str] = field(default_factory=list)
    report_html: str = ""  # local path of the Evidently HTML
    mlflow_run_id: str = ""  # the pairflow-monitor run that recorded it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
