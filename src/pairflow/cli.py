"""The ``pairflow`` command line: thin over the library modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from typer._click.exceptions import ClickException, UsageError

from pairflow.cli_errors import is_help_screen, usage_line
from pairflow.cli_options import (
    ConfigOpt,
    SetOpt,
    VerboseOpt,
    console,
    ensure_writable_dir,
    err_console,
    progress_bar,
)
from pairflow.compile import compile_all
from pairflow.config import load_config, pipeline_params
from pairflow.demo import cli as demo_cli
from pairflow.errors import PairflowError
from pairflow.kubeflow import cli as kubeflow_cli
from pairflow.registry import cli as registry_cli
from pairflow.run_console import run_and_report
from pairflow.serve import cli as serve_cli
from pairflow.serve.requestlog import sink_cli
from pairflow.stages.clip_filter import cli as clip_filter_cli
from pairflow.stages.compress import cli as compress_cli
from pairflow.stages.dedupe import cli as dedupe_cli
from pairflow.stages.deploy import cli as deploy_cli
from pairflow.stages.evaluate import cli as evaluate_cli
from pairflow.stages.ingest import cli as ingest_cli
from pairflow.stages.monitor import cli as monitor_cli
from pairflow.stages.register import cli as register_cli
from pairflow.stages.train import cli as train_cli
from pairflow.stages.validate import cli as validate_cli
from pairflow.tracking import resolve_tracking_uri
from pairflow.ui_server import run_until_signalled

if TYPE_CHECKING:
    pass

app = typer.Typer(
    help="pairflow: continuous retraining of image-text models on Kubeflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="Datasets: synthetic demo data.", no_args_is_help=True)
config_app = typer.Typer(help="Inspect the pipeline config.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(config_app, name="config")

DEFAULT_COMPILED = Path("pipelines/compiled/retrain.yaml")


class _State:
    debug = False


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False) -> None:
    _State.debug = debug


# ---------------------------------------------------------------------------------------------
# data


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the dataset to.")],
    n: Annotated[int, typer.Option("--n", min=1, help="Number of rows.")] = 600,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    defects: Annotated[
        bool, typer.Option("--defects/--no-defects", help="Inject known defects.")
    ] = True,
) -> None:
    """Write a synthetic image-caption dataset: manifest.parquet, images/, ground_truth.parquet."""
    # lazy: pandas, pyarrow (slow to import); only this path needs it
    from pairflow.demo.synthetic import generate_dataset

    ensure_writable_dir(out)
    with progress_bar() as progress:
        task = progress.add_task("generating", total=n)
        summary = generate_dataset(
            out,
            n,
            seed,
            defects=defects,
            progress=lambda done, total: progress.update(task, completed=done),
        )
    injected = ", ".join(f"{k}={v}" for k, v in summary.defects.items() if v) or "none"
    console.print(f"wrote {summary.rows} rows to {summary.manifest}; defects: {injected}")


# ---------------------------------------------------------------------------------------------
# config


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved config as YAML."""
    console.print(load_config(config, set_ or []).to_yaml(), end="", markup=False)


@config_app.command("params")
def config_params() -> None:
    """List the pipeline parameters shown in the Kubeflow UI."""

    table = Table(title="retrain pipeline parameters")
    for col in ("parameter", "config key", "type", "default", "title"):
        table.add_column(col)
    for prm in pipeline_params():
        table.add_row(prm.name, prm.dotted, prm.type.__name__, repr(prm.default), prm.title)
    console.print(table)


# ---------------------------------------------------------------------------------------------
# pipeline


@app.command("compile")
def compile_(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where to write the IR YAML.")] = (
        DEFAULT_COMPILED
    ),
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Compile the retrain pipeline to KFP IR YAML, and the monitor pipeline beside it
    (monitor.yaml in the same folder)."""

    cfg = load_config(config, set_ or [])
    ensure_writable_dir(output.parent)
    if output.name == "monitor.yaml":
        raise PairflowError(f"--output {output}: monitor.yaml is the monitor package's name")
    for path in compile_all(cfg, output):
        console.print(f"wrote {path}")


@app.command("run")
def run(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    cache: Annotated[
        bool, typer.Option("--cache/--no-cache", help="Reuse cached step outputs.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run the retrain pipeline locally through kfp.local."""
    cfg = load_config(config, set_ or [])
    ok, _, _ = run_and_report(cfg, cache=cache, verbose=verbose)
    raise typer.Exit(0 if ok else 1)


# ---------------------------------------------------------------------------------------------
# standalone stages


@app.command("ui")
def ui(
    workdir: Annotated[Path, typer.Option("--workdir", help="Work dir of the runs.")] = Path(
        ".pairflow/demo"
    ),
    port: Annotated[int, typer.Option("--port", min=1, max=65535)] = 5000,
) -> None:
    """Open the MLflow UI on the local sqlite store (127.0.0.1).

    SIGTERM and SIGINT are passed on to the MLflow server, and its whole process group
    (server and workers) is stopped before this command returns.
    """

    uri = resolve_tracking_uri("", workdir)
    mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
    console.print(f"MLflow UI on http://127.0.0.1:{port} for {uri}", markup=False, highlight=False)
    code = run_until_signalled(
        [mlflow_bin, "ui", "--backend-store-uri", uri, "--host", "127.0.0.1", "--port", str(port)]
    )
    raise typer.Exit(code)


@app.command("bench")
def bench(
    stages: Annotated[list[str] | None, typer.Argument(help="Stage(s) or benchmark name(s).")] = (
        None
    ),
) -> None:
    """Run side-by-side benchmarks (from a source checkout); JSON goes to bench/results/."""
    root = next(
        (d for d in (Path.cwd(), *Path.cwd().parents) if (d / "bench" / "__main__.py").is_file()),
        None,
    )
    if root is None:
        raise PairflowError(f"{Path.cwd()}: not inside a pairflow checkout (no bench/ found)")
    proc = subprocess.run([sys.executable, "-m", "bench", *(stages or [])], cwd=root, check=False)
    raise typer.Exit(proc.returncode)


# Each stage's standalone command, then the runtimes' and services' commands; mounted
# explicitly, in the order `pairflow --help` lists them.
def _mount_commands() -> None:

    for module in (
        demo_cli,
        ingest_cli,
        validate_cli,
        dedupe_cli,
        clip_filter_cli,
        train_cli,
        evaluate_cli,
        compress_cli,
        register_cli,
        registry_cli,
        serve_cli,
        deploy_cli,
        kubeflow_cli,
    ):
        module.register(app)
    # the monitor runs a triggered retrain here through the same step board as `pairflow run`
    monitor_cli.register(
        app, run_here=lambda cfg, verbose: run_and_report(cfg, cache=False, verbose=verbose)[2]
    )
    sink_cli.register(app)


_mount_commands()


def main() -> None:
    """Console entry point: user errors (bad input, bad usage) are one line and exit code 2."""

    debug = "--debug" in sys.argv[1:]
    try:
        # Without standalone mode click returns typer.Exit's code instead of exiting.
        code = app(prog_name="pairflow", standalone_mode=False)
    except PairflowError as exc:
        if debug or _State.debug:
            raise
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("aborted")
        sys.exit(130)
    except UsageError as exc:
        if debug:
            raise
        if is_help_screen(exc):
            exc.show()
        else:
            line = f"error: {usage_line(exc)}"
            err_console.print(line, markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except ClickException as exc:
        if debug:
            raise
        err_console.print(
            f"error: {' '.join(exc.format_message().split())}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
