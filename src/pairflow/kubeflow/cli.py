"""CLI commands of this package, added to the ``pairflow`` app by :func:`register`.

``submit``, ``schedule`` and ``promote-pipeline`` upload the committed compiled package
(``pipelines/compiled/retrain.yaml``; ``schedule --pipeline monitor``: ``monitor.yaml``) to a
KFP endpoint; see :mod:`pairflow.kubeflow.publish`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pairflow.config import load_config
from pairflow.errors import PairflowError
from pairflow.kubeflow.monitor_params import check_sets, param_values
from pairflow.kubeflow.publish import Endpoint, promote, run_parameters, schedule, submit
from pairflow.kubeflow.version import CompiledPackage, version_name

DEFAULT_PACKAGE = Path("pipelines/compiled/retrain.yaml")
MONITOR_PACKAGE = Path("pipelines/compiled/monitor.yaml")
# The monitor's recurring run: every hour, judging the last monitor.window_hours; the trigger's
# cooldown and window keys keep overlapping windows from retraining more than once.
MONITOR_SCHEDULE = "pairflow-monitor"
MONITOR_CRON = "0 30 * * * *"
console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", help="Pipeline parameter override: key.path=value.")
]
PackageOpt = Annotated[Path, typer.Option("--package", help="Compiled pipeline YAML to upload.")]
VersionOpt = Annotated[
    str | None,
    typer.Option("--version", help="Pipeline version name (default: the git sha, 12 chars)."),
]
ExperimentOpt = Annotated[
    str | None, typer.Option("--experiment", help="KFP experiment (default: kubeflow.experiment).")
]
NamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "--namespace",
        help="Multi-user KFP profile namespace (default: kubeflow.namespace; in a pod, its own).",
    ),
]


def _host(value: str | None, fallback: str, flag: str = "--host") -> str:
    host = value or fallback
    if not host:
        raise PairflowError(f"{flag}: no KFP endpoint given (nor kubeflow.host in the config)")
    return host


def register(app: typer.Typer) -> None:
    """Add ``submit``, ``schedule`` and ``promote-pipeline`` to ``app``."""

    @app.command("submit")
    def submit_cmd(
        host: Annotated[str | None, typer.Option("--host", help="KFP API URL.")] = None,
        experiment: ExperimentOpt = None,
        namespace: NamespaceOpt = None,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        package: PackageOpt = DEFAULT_PACKAGE,
        version: VersionOpt = None,
        run_name: Annotated[str, typer.Option("--run-name", help="Run display name.")] = "",
        wait: Annotated[bool, typer.Option("--wait/--no-wait", help="Follow to the end.")] = False,
        timeout: Annotated[float, typer.Option("--timeout", help="--wait limit, seconds.")] = (
            6 * 3600
        ),
        poll: Annotated[float, typer.Option("--poll", help="--wait poll interval, s.")] = 10.0,
    ) -> None:
        """Upload the compiled pipeline as a version named after the git sha and run it."""

        cfg = load_config(config, set_ or [])
        if namespace:
            cfg.kubeflow.namespace = namespace
        pkg = CompiledPackage.load(package)
        params = run_parameters(cfg, set_ or [], pkg)
        name = version_name(pkg, version)
        endpoint = Endpoint(_host(host, cfg.kubeflow.host), cfg.kubeflow.token_env)
        exp = experiment or cfg.kubeflow.experiment
        with console.status(f"submitting {pkg.name} {name} to {endpoint.host} …") as status:
            result = submit(
                cfg,
                endpoint,
                pkg,
                params,
                name,
                experiment=exp,
                run_name=run_name,
                wait=wait,
                timeout_s=timeout,
                poll_s=poll,
                on_state=lambda s: status.update(f"run {s.lower()} …"),
            )
        made = "uploaded" if result.version.created else "reused"
        console.print(f"pipeline version {name}: {made} ({result.version.version_id})")
        console.print(f"run {result.run_id} started in experiment {exp!r}")
        if result.run is None:
            return
        if result.run.succeeded:
            console.print(f"run {result.run_id}: [green]SUCCEEDED[/]")
            return
        failed = ", ".join(result.run.failed_tasks) or "no task details"
        console.print(f"run {result.run_id}: [red]{result.run.state}[/] (failed: {failed})")
        raise typer.Exit(1)

    @app.command("schedule")
    def schedule_cmd(
        host: Annotated[str | None, typer.Option("--host", help="KFP API URL.")] = None,
        pipeline: Annotated[
            str,
            typer.Option(
                "--pipeline",
                help="retrain (pipelines/compiled/retrain.yaml) or monitor "
                "(pipelines/compiled/monitor.yaml: hourly, recurring run pairflow-monitor).",
            ),
        ] = "retrain",
        cron: Annotated[
            str | None, typer.Option("--cron", help="Cron (KFP: 6 fields with seconds).")
        ] = None,
        name: Annotated[
            str | None, typer.Option("--name", help="Recurring run name (kubeflow.schedule_name).")
        ] = None,
        experiment: ExperimentOpt = None,
        namespace: NamespaceOpt = None,
        config: ConfigOpt = None,
        set_: SetOpt = None,
        package: Annotated[
            Path | None,
            typer.Option("--package", help="Compiled pipeline YAML (default: per --pipeline)."),
        ] = None,
        version: VersionOpt = None,
    ) -> None:
        """Create or update the recurring run, pinned to this commit's pipeline version."""

        if pipeline not in ("retrain", "monitor"):
            raise PairflowError(f"--pipeline {pipeline!r}: expected retrain or monitor")
        cfg = load_config(config, set_ or [])
        if namespace:
            cfg.kubeflow.namespace = namespace
        monitor = pipeline == "monitor"
        pkg = CompiledPackage.load(package or (MONITOR_PACKAGE if monitor else DEFAULT_PACKAGE))
        if monitor:
            check_sets(set_ or [])
            params = pkg.coerce(param_values(cfg))
        else:
            params = run_parameters(cfg, set_ or [], pkg)
        if monitor and pkg.name != "monitor":
            raise PairflowError(f"--package {pkg.path}: holds pipeline {pkg.name!r}, not monitor")
        vname = version_name(pkg, version)
        endpoint = Endpoint(_host(host, cfg.kubeflow.host), cfg.kubeflow.token_env)
        rr_name = name or (MONITOR_SCHEDULE if monitor else cfg.kubeflow.schedule_name)
        with console.status(f"scheduling {rr_name} on {endpoint.host} …"):
            ref, result = schedule(
                cfg,
                endpoint,
                pkg,
                params,
                vname,
                experiment=experiment or cfg.kubeflow.experiment,
                name=rr_name,
                cron=cron or (MONITOR_CRON if monitor else cfg.kubeflow.cron),
                pipeline=pipeline if monitor else "",
            )
        console.print(
            f"recurring run {rr_name!r} {result.action}: {result.recurring_run_id} → version "
            f"{ref.name}" + (f" (replaced {', '.join(result.replaced)})" if result.replaced else "")
        )

    @app.command("promote-pipeline")
    def promote_cmd(
        from_: Annotated[str, typer.Option("--from", help="Source KFP API URL (dev).")],
        to: Annotated[str, typer.Option("--to", help="Target KFP API URL (prod).")],
        version: VersionOpt = None,
        cron: Annotated[str | None, typer.Option("--cron", help="Cron for the target.")] = None,
        name: Annotated[str | None, typer.Option("--name", help="Recurring run name.")] = None,
        experiment: ExperimentOpt = None,
        namespace: NamespaceOpt = None,
        from_experiment: Annotated[
            str | None, typer.Option("--from-experiment", help="Where the source run must be.")
        ] = None,
        require_success: Annotated[
            bool,
            typer.Option(
                "--require-success/--no-require-success",
                help="Require a SUCCEEDED run of the version on the source.",
            ),
        ] = True,
        from_token_env: Annotated[
            str, typer.Option("--from-token-env", help="Env var with the source token.")
        ] = "KFP_FROM_TOKEN",
        to_token_env: Annotated[
            str, typer.Option("--to-token-env", help="Env var with the target token.")
        ] = "KFP_TO_TOKEN",
        config: ConfigOpt = None,
        set_: SetOpt = None,
        package: PackageOpt = DEFAULT_PACKAGE,
    ) -> None:
        """Upload the version that ran on --from to --to and repoint its recurring run."""

        cfg = load_config(config, set_ or [])
        if namespace:
            cfg.kubeflow.namespace = namespace
        kf = cfg.kubeflow
        pkg = CompiledPackage.load(package)
        params = run_parameters(cfg, set_ or [], pkg)
        vname = version_name(pkg, version)
        # Each side's token: its own variable if set, else kubeflow.token_env.
        src_env = from_token_env if os.environ.get(from_token_env) else kf.token_env
        dst_env = to_token_env if os.environ.get(to_token_env) else kf.token_env
        exp = experiment or kf.experiment
        with console.status(f"promoting {vname}: {from_} → {to} …"):
            result = promote(
                cfg,
                Endpoint(_host(from_, "", "--from"), src_env),
                Endpoint(_host(to, "", "--to"), dst_env),
                pkg,
                params,
                vname,
                source_experiment=from_experiment or exp,
                experiment=exp,
                name=name or kf.schedule_name,
                cron=cron or kf.cron,
                require_success=require_success,
            )
        if result.source_run:
            console.print(f"source run {result.source_run} of {vname} succeeded")
        made = "uploaded" if result.target.created else "already present"
        console.print(f"{to}: version {vname} {made} ({result.target.version_id})")
        sched = result.schedule
        console.print(
            f"{to}: recurring run {sched.action}: {sched.recurring_run_id}"
            + (f" (replaced {', '.join(sched.replaced)})" if sched.replaced else "")
        )
