"""Standalone data stages (``pairflow validate|dedupe|filter --input SOURCE --out DIR``): the
shared reading and writing around one stage's frame function.

``SOURCE`` is anything ingest accepts (a folder, a Parquet/JSONL manifest with image paths
relative to it, WebDataset tar shards, ``s3://``), read and resolved exactly as ingest does:
rows ingest would reject (missing id or image, unsafe path, duplicate id) are rejected with
ingest's reason, the rest run through the stage. A manifest a stage wrote (absolute URIs,
signature columns) reads back unchanged. Each writes ``kept.parquet``,
``rejected.parquet`` (with reasons) and ``report.json`` into ``--out``, exactly as the
pipeline step does on one shard.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from pairflow.cli_options import console, ensure_writable_dir
from pairflow.report import StageOutputs, Stopwatch

if TYPE_CHECKING:
    import pandas as pd

    from pairflow.config import DataConfig
    from pairflow.report import StageReport
    from pairflow.stage_io import StageResult

InputOpt = Annotated[
    str,
    typer.Option(
        "--input", help="Source: folder, manifest (.parquet/.jsonl), .tar shard(s), s3://…"
    ),
]
R = TypeVar("R", bound="StageResult")


def run_standalone(
    stage: str,
    input_: str,
    out: Path,
    status: str,
    run: Callable[[pd.DataFrame], R],
    data: DataConfig,
) -> tuple[StageReport, R]:
    """Read ``input_`` as ingest does, run one stage on it, write its kept/rejected manifests.

    Rows ingest rejects are rejected here with ingest's reason (and ``stage`` ``ingest``), so
    rows in = kept + rejected still holds. The report is returned unwritten, so a command can
    add figures before writing it.
    """
    # lazy: boto3, botocore, pandas, pyarrow (slow to import); only this path needs it
    import pandas as pd

    from pairflow.data.admit import split_rejects
    from pairflow.data.sources import load_source
    from pairflow.stage_io import write_stage_outputs

    ensure_writable_dir(out)
    watch = Stopwatch()
    source, _ = load_source(input_, data.format, data.s3)
    df, ingest_rejected, ingest_counts = split_rejects(source)
    with console.status(f"{status} {len(df)} rows …"):
        result = run(df)
        if len(ingest_rejected):
            result.rejected = pd.concat([ingest_rejected, result.rejected], ignore_index=True)
            for reason, count in ingest_counts.items():
                result.counts[reason] = result.counts.get(reason, 0) + count
        report = write_stage_outputs(stage, len(source), result, StageOutputs.in_dir(out), watch)
    return report, result


def finish_standalone(report: StageReport, out: Path) -> None:
    """Write the report (checking rows in = out + rejected) and print the one-line outcome."""

    report.write(StageOutputs.in_dir(out).report)
    console.print(
        f"{report.stage}: {report.rows_in} in, {report.rows_out} kept, "
        f"{report.rows_rejected} rejected {report.rejected} → {out}"
    )
