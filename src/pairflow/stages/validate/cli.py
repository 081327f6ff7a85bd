"""``pairflow validate``: per-row checks and the data contract on any source, standalone."""

from __future__ import annotations

import typer

from pairflow.cli_options import ConfigOpt, OutOpt, SetOpt, console
from pairflow.config import load_config
from pairflow.metrics import ContractSummary, ValidateMetrics
from pairflow.stage_cli import InputOpt, finish_standalone, run_standalone


def register(app: typer.Typer) -> None:
    """Add ``validate`` to ``app``."""

    @app.command("validate")
    def validate_cmd(
        input_: InputOpt, out: OutOpt, config: ConfigOpt = None, set_: SetOpt = None
    ) -> None:
        """Per-row checks and the data contract; exit 1 when a critical expectation fails."""
        # lazy: boto3, botocore, pandas, pyarrow (slow to import); only this path needs it
        from pairflow.stages.validate.contract import run_contract
        from pairflow.stages.validate.rows import validate_frame

        cfg = load_config(config, set_ or [])
        report, result = run_standalone(
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
        metrics = report.metrics_as(ValidateMetrics)
        metrics.contract = ContractSummary.model_validate(contract.to_json_dict())
        report.metrics = metrics.to_json()
        finish_standalone(report, out)
        console.print(f"data contract: {contract.message()} (docs: {contract.html})")
        raise typer.Exit(0 if contract.passed else 1)
