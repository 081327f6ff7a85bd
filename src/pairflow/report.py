"""The stage report contract: every stage writes ``report.json`` with conserved row counts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from pairflow.errors import ConservationError, InputDataError
from pairflow.metrics import MetricsError, StageMetrics, check_metrics, parse_metrics

M = TypeVar("M", bound=StageMetrics)


class StageReport(BaseModel):
    """What a stage did: rows in, rows out, rejects by reason, time, and its own figures.

    ``implemented`` is False for steps whose issue has not landed yet: they pass data
    through unchanged and must never present results as real.
    """

    model_config = ConfigDict(extra="forbid")

    stage: str
    rows_in: int = Field(ge=0)
    rows_out: int = Field(ge=0)
    rejected: dict[str, int] = Field(default_factory=dict)
    seconds: float = 0.0
    implemented: bool = True
    shard: int | None = None
    # the stage's figures as JSON: built from, and read back as, its model in
    # pairflow.metrics (``StageReport(..., metrics=TrainMetrics(...).to_json())``,
    # ``report.metrics_as(TrainMetrics)``); checked against it when written and read
    metrics: dict[str, Any] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    def metrics_as(self, model: type[M]) -> M:
        """The metrics as their stage's typed model; :class:`~pairflow.metrics.MetricsError`
        naming the stage and the field when they do not match it."""
        return parse_metrics(self.stage, self.metrics, model)

    def check(self) -> StageReport:
        """Raise :class:`ConservationError` unless rows_in == rows_out + rows rejected."""
        if self.rows_in != self.rows_out + self.rows_rejected:
            raise ConservationError(
                f"stage {self.stage!r}: rows_in={self.rows_in} != rows_out={self.rows_out} "
                f"+ rejected={self.rows_rejected} ({self.rejected})"
            )
        return self

    def to_json_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["rows_rejected"] = self.rows_rejected
        return data

    def write(self, path: str | Path) -> Path:
        """Check conservation and the metrics' model, then write the report as JSON to
        ``path``."""
        self.check()
        check_metrics(self.stage, self.metrics)
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.to_json_dict(), indent=2, sort_keys=True) + "\n")
        return out

    @classmethod
    def read(cls, path: str | Path) -> StageReport:
        p = Path(path)
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputDataError(f"{p}: not a readable stage report ({exc})") from exc
        data.pop("rows_rejected", None)
        report = cls.model_validate(data).check()
        try:
            check_metrics(report.stage, report.metrics)
        except MetricsError as exc:
            raise MetricsError(f"{p}: {exc}") from None
        return report


def merge_reports(stage: str, reports: list[StageReport], **extra: Any) -> StageReport:
    """Sum per-shard reports of one stage into one report (seconds are summed CPU time)."""
    rejected: dict[str, int] = {}
    for r in reports:
        for reason, n in r.rejected.items():
            rejected[reason] = rejected.get(reason, 0) + n
    return StageReport(
        stage=stage,
        rows_in=sum(r.rows_in for r in reports),
        rows_out=sum(r.rows_out for r in reports),
        rejected=rejected,
        seconds=sum(r.seconds for r in reports),
        implemented=all(r.implemented for r in reports),
        metrics={"shards": len(reports), **extra},
    ).check()


class Stopwatch:
    """Wall-clock seconds since creation."""

    def __init__(self) -> None:
        self.start = time.perf_counter()

    @property
    def seconds(self) -> float:
        return round(time.perf_counter() - self.start, 3)


class StageOutputs(BaseModel):
    """Where a stage writes: kept manifest, rejected rows (with ``reason``) and its report."""

    kept: Path
    rejected: Path
    report: Path

    @classmethod
    def in_dir(cls, out_dir: str | Path) -> StageOutputs:
        d = Path(out_dir)
        return cls(
            kept=d / "kept.parquet", rejected=d / "rejected.parquet", report=d / "report.json"
        )
