"""``pairflow filter``: CLIP-score any source's pairs and keep the agreeing ones, standalone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pairflow.cli_options import ConfigOpt, OutOpt, SetOpt, console
from pairflow.config import load_config
from pairflow.errors import ConfigError
from pairflow.metrics import ClipFilterMetrics
from pairflow.stage_cli import InputOpt, finish_standalone, run_standalone


def register(app: typer.Typer) -> None:
    """Add ``filter`` to ``app``."""

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
        # lazy: boto3, botocore, pandas, pyarrow, torch (slow to import); only this path needs it
        from pairflow.stages.clip_filter.run import FilterOutputs, run_filter

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
        report, _ = run_standalone(
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
        finish_standalone(report, out)
        auc = report.metrics_as(ClipFilterMetrics).roc_auc
        if auc is not None:
            console.print(f"ROC-AUC vs mismatched captions: {auc:.3f}")
