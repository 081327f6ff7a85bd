"""``pairflow monitor``: judge the last window of served traffic and, when the policy says so,
start a retrain on it (KFP with ``--host``, else locally through kfp.local)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from pairflow.cli_options import ConfigOpt, SetOpt
from pairflow.config import PairflowConfig, load_config
from pairflow.errors import PairflowError
from pairflow.kubeflow.publish import Endpoint
from pairflow.kubeflow.version import CompiledPackage, version_name
from pairflow.stages.monitor.trigger import KfpTarget
from pairflow.tracking import resolve_mlflow_settings

if TYPE_CHECKING:
    from pairflow.local_run import LocalRunResult

DEFAULT_PACKAGE = Path("pipelines/compiled/retrain.yaml")
console = Console()


def parse_window_end(text: str | None) -> datetime | None:
    """``--window-end`` as an aware datetime (``Z`` accepted); None for "now"."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise PairflowError(
            f"--window-end {text!r}: not an ISO 8601 time (e.g. 2026-12-06T12:00:00Z)"
        ) from exc
    if value.tzinfo is None:
        raise PairflowError(f"--window-end {text!r}: give a timezone (e.g. Z or +00:00)")
    return value


def register(app: typer.Typer, run_here: Callable[[PairflowConfig, bool], LocalRunResult]) -> None:
    """Add ``pairflow monitor`` to ``app``; a retrain the policy triggers without a KFP host runs
    through ``run_here(cfg, verbose)`` (the root CLI's ``pairflow run``)."""

    @app.command("monitor")
    def monitor_cmd(
        window_end: Annotated[
            str | None,
            typer.Option(
                "--window-end",
                help="End of the window (ISO 8601 with a timezone; default now). Its length is "
                "monitor.window_hours.",
            ),
        ] = None,
        dry_run: Annotated[
            bool,
            typer.Option("--dry-run", help="Judge and record the decision; start nothing."),
        ] = False,
        host: Annotated[
            str | None,
            typer.Option(
                "--host",
                help="KFP API URL the retrain is submitted to (default kubeflow.host); "
                "none: the retrain runs here through kfp.local.",
            ),
        ] = None,
        package: Annotated[
            Path,
            typer.Option("--package", help="Compiled retrain pipeline uploaded as the version."),
        ] = DEFAULT_PACKAGE,
        version: Annotated[
            str | None,
            typer.Option("--version", help="Retrain pipeline version name (default: git sha)."),
        ] = None,
        pinned: Annotated[
            bool,
            typer.Option(
                "--pinned",
                help="Run the retrain version the recurring run kubeflow.schedule_name is "
                "pinned to (upload nothing).",
            ),
        ] = False,
        namespace: Annotated[
            str | None, typer.Option("--namespace", help="Multi-user KFP profile namespace.")
        ] = None,
        experiment: Annotated[
            str | None, typer.Option("--experiment", help="KFP experiment of the retrain run.")
        ] = None,
        wait: Annotated[
            bool, typer.Option("--wait/--no-wait", help="KFP: follow the retrain to its end.")
        ] = False,
        verbose: Annotated[
            bool, typer.Option("--verbose", "-v", help="Local retrain: stream step logs.")
        ] = False,
        config: ConfigOpt = None,
        set_: SetOpt = None,
    ) -> None:
        """Judge the last window of logged traffic; a drifted one starts a guarded retrain."""
        # lazy: boto3, botocore, pandas, pyarrow (slow to import); only this path needs it
        from pairflow.stages.monitor.run import decision_lines, monitor_window

        cfg = resolve_mlflow_settings(load_config(config, set_ or []))
        if namespace:
            cfg.kubeflow.namespace = namespace
        end = parse_window_end(window_end)
        target = _target(cfg, host, package, version, pinned, experiment, wait)
        status = console.status("monitor …")

        def run_locally(run_cfg: PairflowConfig) -> LocalRunResult:
            status.stop()  # the step board takes the terminal
            console.print("the policy says retrain: running it here through kfp.local")
            return run_here(run_cfg, verbose)

        with status:
            outcome = monitor_window(
                cfg,
                window_end=end,
                dry_run=dry_run,
                target=target,
                local_runner=run_locally if target is None else None,
                progress=status.update,
            )
        for line in decision_lines(outcome):
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        sub = outcome.submitted
        if sub is not None and sub.state and sub.state != "SUCCEEDED":
            raise typer.Exit(1)


def _target(
    cfg: PairflowConfig,
    host: str | None,
    package: Path,
    version: str | None,
    pinned: bool,
    experiment: str | None,
    wait: bool,
) -> KfpTarget | None:
    """Where a triggered retrain goes: KFP (package version, or the pinned one), else None."""

    url = host or cfg.kubeflow.host
    if not url:
        if pinned or version:
            raise PairflowError("--pinned/--version need a KFP endpoint (--host)")
        return None
    endpoint = Endpoint(url, cfg.kubeflow.token_env)
    exp = experiment or ""
    if pinned:
        return KfpTarget(endpoint, experiment=exp, wait=wait)
    pkg = CompiledPackage.load(package)
    return KfpTarget(endpoint, pkg, version_name(pkg, version), experiment=exp, wait=wait)
