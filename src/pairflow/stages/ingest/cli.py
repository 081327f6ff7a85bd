"""``pairflow ingest``: the ingest stage, standalone (any source into a manifest)."""

from __future__ import annotations

from typing import Annotated

import typer

from pairflow.cli_options import ConfigOpt, OutOpt, SetOpt, console, ensure_writable_dir
from pairflow.config import load_config
from pairflow.report import StageOutputs


def register(app: typer.Typer) -> None:
    """Add ``ingest`` to ``app``."""

    @app.command("ingest")
    def ingest_cmd(
        input_: Annotated[
            str, typer.Option("--input", help="Source: folder, manifest, tars, s3://.")
        ],
        out: OutOpt,
        fmt: Annotated[
            str, typer.Option("--format", help="auto|folder|parquet|jsonl|webdataset")
        ] = ("auto"),
        config: ConfigOpt = None,
        set_: SetOpt = None,
    ) -> None:
        """Ingest one source into kept.parquet / rejected.parquet / report.json."""
        # lazy: boto3, botocore, pandas, pyarrow (slow to import); only this path needs it
        from pairflow.stages.ingest.ingest import run_ingest

        cfg = load_config(config, [*(set_ or []), f"data.format={fmt}"])
        ensure_writable_dir(out)
        report = run_ingest(input_, StageOutputs.in_dir(out), cfg.data)
        console.print(
            f"ingest: {report.rows_in} in, {report.rows_out} kept, "
            f"{report.rows_rejected} rejected {report.rejected or ''} → {out}"
        )
