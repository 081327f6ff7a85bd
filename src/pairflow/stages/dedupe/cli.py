"""``pairflow dedupe``: exact, near and caption duplicates on any source, standalone."""

from __future__ import annotations

import typer

from pairflow.cli_options import ConfigOpt, OutOpt, SetOpt
from pairflow.config import load_config
from pairflow.stage_cli import InputOpt, finish_standalone, run_standalone


def register(app: typer.Typer) -> None:
    """Add ``dedupe`` to ``app``."""

    @app.command("dedupe")
    def dedupe_cmd(
        input_: InputOpt, out: OutOpt, config: ConfigOpt = None, set_: SetOpt = None
    ) -> None:
        """Exact, near and caption duplicates; each dropped row names the id it duplicates."""
        # lazy: datasketch, pandas, scipy (slow to import); only this path needs it
        from pairflow.stages.dedupe.merge import dedupe_frame

        cfg = load_config(config, set_ or [])
        report, _ = run_standalone(
            "dedupe",
            input_,
            out,
            "deduplicating",
            lambda df: dedupe_frame(df, cfg.dedupe),
            cfg.data,
        )
        finish_standalone(report, out)
