"""The ingest stage: read any source into a manifest; rows that cannot be pairs are rejected
with a reason (see :mod:`pairflow.data.admit`). Image files are not opened here; validate checks
that they exist and decode.
"""

from __future__ import annotations

from collections import Counter

from pairflow.config import DataConfig
from pairflow.data.admit import STAGE, split_rejects
from pairflow.data.schema import write_manifest
from pairflow.data.sources import load_source
from pairflow.metrics import IngestMetrics
from pairflow.report import StageOutputs, StageReport, Stopwatch


def run_ingest(source: str, outputs: StageOutputs, data: DataConfig) -> StageReport:
    """Read ``source`` (or ``data.source`` when empty) and write kept/rejected/report.

    ``data.format`` picks the reader and ``data.s3`` the S3 endpoint. The report's metrics hold
    ``source``, the ``format`` actually used, and ``sources``: input rows per ``source`` value.
    """
    clock = Stopwatch()
    src = source or data.source
    df, fmt = load_source(src, data.format, data.s3)
    kept, rejected, counts = split_rejects(df)
    write_manifest(kept, outputs.kept)
    write_manifest(rejected, outputs.rejected)
    per_source = Counter(str(v) for v in df["source"].tolist())
    report = StageReport(
        stage=STAGE,
        rows_in=len(df),
        rows_out=len(kept),
        rejected=counts,
        seconds=clock.seconds,
        metrics=IngestMetrics(
            source=src, format=fmt, sources=dict(sorted(per_source.items()))
        ).to_json(),
    )
    report.write(outputs.report)
    return report.check()
