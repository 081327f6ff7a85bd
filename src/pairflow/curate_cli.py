"""Standalone curate stages: ``pairflow validate|dedupe|filter --input SOURCE --out DIR``.

``SOURCE`` is anything ingest accepts (a folder, a Parquet/JSONL manifest with image paths
relative to it, WebDataset tar shards, ``s3://``), read and resolved exactly as ingest does:
rows ingest would reject (missing id or image, unsafe path, duplicate id) are rejected with
ingest's reason, the rest run through the stage. A manifest a stage wrote (absolute URIs,
signature columns) reads back unchanged. Each writes ``kept.parquet``,
``rejected.parquet`` (with reasons) and ``report.json`` into ``--out``, exactly as the
pipeline step does on one shard (validate adds the data contract's HTML page and Data Docs
site; filter adds embeddings, a score histogram and a summary).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from pairflow.cli_options import ConfigOpt, OutOpt, SetOpt

if TYPE_CHECKING:
    import pandas as pd

    from pairflow.config import DataConfig
    from pairflow.report import StageReport
    from pairflow.steps import StageResult

InputOpt = Annotated[
    str,
    typer.Option(
        "--input", help="Source: folder, manifest (.parquet/.jsonl), .tar shard(s), s3://…"
    ),
]
R = TypeVar("R", bound="StageResult")


def _run_stage(
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
    import pandas as pd

    from pairflow.cli import console, ensure_writable_dir
    from pairflow.data.ingest import split_rejects
    from pairflow.data.sources import load_source
    from pairflow.report import StageOutputs, Stopwatch
    from pairflow.steps import write_stage_outputs

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


def _finish(report: StageReport, out: Path) -> None:
    """Write the report (checking rows in = out + rejected) and print the one-line outcome."""
    from pairflow.cli import console
    from pairflow.report import StageOutputs

    report.write(StageOutputs.in_dir(out).report)
    console.print(
        f"{report.stage}: {report.rows_in} in, {report.rows_out} kept, "
        f"{report.rows_rejected} rejected {report.rejected} → {out}"
    )


def register(app: typer.Typer) -> None:
    """Add ``validate``, ``dedupe`` and ``filter`` to ``app``."""

    @app.command("validate")
    def validate_cmd(
        input_: InputOpt, out: OutOpt, config: ConfigOpt = None, set_: SetOpt = None
    ) -> None:
        """Per-row checks and the data contract; exit 1 when a critical expectation fails."""
        from pairflow.cli import console
        from pairflow.config import load_config
        from pairflow.validate.contract import run_contract
        from pairflow.validate.rows import validate_frame

        cfg = load_config(config, set_ or [])
        report, result = _run_stage(
            "validate",
            input_,
            out,
            "validating",
            lambda df: validate_frame(df, cfg.validate_, cfg.data.s3),
            cfg.data,
        )
        contract = run_contract(
            result.kept, result.rejected, cfg.validate_, out / "data_docs", raise_on_failure=False
        )
        report.metrics["contract"] = contract.to_json_dict()
        _finish(report, out)
        console.print(f"data contract: {contract.message()} (docs: {contract.html})")
        raise typer.Exit(0 if contract.passed else 1)

    @app.command("dedupe")
    def dedupe_cmd(
        input_: InputOpt, out: OutOpt, config: ConfigOpt = None, set_: SetOpt = None
    ) -> None:
        """Exact, near and caption duplicates; each dropped row names the id it duplicates."""
        from pairflow.config import load_config
        from pairflow.dedupe.merge import dedupe_frame

        cfg = load_config(config, set_ or [])
        report, _ = _run_stage(
            "dedupe",
            input_,
            out,
            "deduplicating",
            lambda df: dedupe_frame(df, cfg.dedupe),
            cfg.data,
        )
        _finish(report, out)

    @app.command("filter")
    def filter_cmd(
        input_: InputOpt,
        out: OutOpt,
        model: Annotated[
            str | None, typer.Option("--model", help="CLIP: dir, HF id, s3://, models:/…")
        ] = None,
        threshold: Annotated[
            float | None, typer.Option("--threshold", help="Keep score ≥ this.")
        ] = None,
        top_fraction: Annotated[
            float | None, typer.Option("--top-fraction", help="Keep this best fraction.")
        ] = None,
        ground_truth: Annotated[
            Path | None, typer.Option("--ground-truth", help="Generator ground truth (AUC).")
        ] = None,
        config: ConfigOpt = None,
        set_: SetOpt = None,
    ) -> None:
        """CLIP-score pairs and keep those whose image and caption agree."""
        from pairflow.cli import console
        from pairflow.clipfilter.run import FilterOutputs, run_filter
        from pairflow.config import load_config
        from pairflow.errors import ConfigError

        if threshold is not None and top_fraction is not None:
            raise ConfigError("--threshold and --top-fraction exclude each other")
        sets = list(set_ or [])
        if model is not None:
            sets.append(f"clip_filter.model={model}")
        if threshold is not None:
            sets += [f"clip_filter.threshold={threshold}", "clip_filter.top_fraction=0"]
        if top_fraction is not None:
            sets.append(f"clip_filter.top_fraction={top_fraction}")
        cfg = load_config(config, sets)
        if not cfg.clip_filter.model:
            raise ConfigError("no CLIP model: pass --model REF (or set clip_filter.model)")
        report, result = _run_stage(
            "clip_filter",
            input_,
            out,
            f"scoring with {cfg.clip_filter.model}:",
            lambda df: run_filter(
                df,
                cfg.clip_filter,
                cfg.data.s3,
                outputs=FilterOutputs.in_dir(out),
                ground_truth=ground_truth,
                max_pixels=cfg.validate_.max_pixels,
            ),
            cfg.data,
        )
        _finish(report, out)
        auc = result.metrics.get("roc_auc")
        if auc is not None:
            console.print(f"ROC-AUC vs mismatched captions: {auc:.3f}")
