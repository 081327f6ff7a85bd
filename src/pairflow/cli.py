"""The ``pairflow`` command line: thin over the library modules."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from pairflow.cli_options import (
    ConfigOpt,
    OutOpt,
    SetOpt,
    console,
    ensure_writable_dir,
    err_console,
)
from pairflow.config import PairflowConfig, load_config, pipeline_params
from pairflow.errors import PairflowError
from pairflow.report import StageReport
from pairflow.summary import budget_sentence

if TYPE_CHECKING:
    from pairflow.local_run import LocalRunResult
    from pairflow.stages.monitor.run import MonitorOutcome

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
    from pairflow.demo.synthetic import generate_dataset

    ensure_writable_dir(out)
    with _progress() as progress:
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


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


# ---------------------------------------------------------------------------------------------
# config


@config_app.command("show")
def config_show(config: ConfigOpt = None, set_: SetOpt = None) -> None:
    """Print the resolved config as YAML."""
    console.print(load_config(config, set_ or []).to_yaml(), end="", markup=False)


@config_app.command("params")
def config_params() -> None:
    """List the pipeline parameters shown in the Kubeflow UI."""
    from rich.table import Table

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
    from pairflow.compile import compile_all

    cfg = load_config(config, set_ or [])
    ensure_writable_dir(output.parent)
    if output.name == "monitor.yaml":
        raise PairflowError(f"--output {output}: monitor.yaml is the monitor package's name")
    for path in compile_all(cfg, output):
        console.print(f"wrote {path}")


VerboseOpt = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v", help="Stream every step's executor log (they always go to files)."
    ),
]


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


def run_and_report(
    cfg: PairflowConfig, *, cache: bool, verbose: bool, extra: list[str] | None = None
) -> tuple[bool, list[tuple[str, float]], LocalRunResult]:
    """Run the pipeline with one line per step, then the summary; returns (ok, time split,
    the run's result)."""
    from pairflow.local_run import run_pipeline_locally
    from pairflow.run_view import StepBoard
    from pairflow.summary import stage_table

    ensure_writable_dir(Path(cfg.run.workdir), "work dir")
    # Pinned to this stdout: kfp.local's own chatter is redirected away while steps run.
    board = StepBoard(Console(file=sys.stdout, width=None if console.is_terminal else 120))
    if verbose:
        result = run_pipeline_locally(cfg, enable_caching=cache, verbose=True)
    else:
        with board.shown():
            result = run_pipeline_locally(
                cfg, enable_caching=cache, listener=board.handle, on_start=board.plan
            )
    if result.reports:
        console.print(
            stage_table(result.reports, title="retrain — what each stage did"),
            width=min(120, console.width),
        )
    for line in _highlights(result.reports):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(_outcome_line(result.reports))
    for line in extra or []:
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(
        f"run outputs and reports: {result.run_dir}", markup=False, highlight=False, soft_wrap=True
    )
    if result.log_dir is not None:
        console.print(
            f"step logs (one file per step): {result.log_dir}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    console.print(
        f"MLflow: {result.tracking_uri} (experiment {result.experiment!r})",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"open the MLflow UI: pairflow ui --workdir {cfg.run.workdir}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    status = "[green]succeeded[/]" if result.succeeded else f"[red]FAILED[/]: {result.error}"
    console.print(f"pipeline {status} in {result.seconds:.1f} s")
    return result.succeeded, board.split(), result


def _highlights(reports: dict[str, StageReport]) -> list[str]:
    """Headline measurements of the run, one line each (only those that were measured)."""
    from pairflow.summary import train_metric_name

    lines = []
    flt = reports.get("clip_filter")
    if flt is not None and flt.metrics.get("roc_auc") is not None:
        m = flt.metrics
        lines.append(
            f"clip-filter ROC-AUC vs the generator's mismatched captions: {m['roc_auc']:.3f} "
            f"({m.get('auc_positives')} mismatched, {m.get('auc_negatives')} clean pairs)"
        )
    train = reports.get("train")
    if train is not None and "samples_per_s" in train.metrics:
        t = train.metrics
        val = t.get("val") or {}
        loss = f", val loss {val['val_loss']:.3f}" if isinstance(val.get("val_loss"), float) else ""
        lines.append(
            f"train: {t.get('model')} on {t.get('rows_train')} rows, world size "
            f"{t.get('world_size')}, {t['samples_per_s']} samples/s; best "
            f"{train_metric_name(t.get('model'))} {t.get('best_val_metric')}{loss}"
        )
    ev = reports.get("evaluate")
    if ev is not None:
        cand = ev.metrics.get("candidate") or {}
        gate = ev.metrics.get("gate") or {}
        r1 = cand.get("i2t_recall_at_1")
        verdict = "passed" if gate.get("passed") else "BLOCKED"
        lines.append(
            f"evaluate: held-out image→text recall@1 {r1:.3f} on "
            f"{ev.metrics.get('evaluated_rows')} rows; gate {verdict}"
            if isinstance(r1, float)
            else f"evaluate: gate {verdict}"
        )
        lines.extend(f"  gate: {reason}" for reason in gate.get("reasons", []))
    cmp = reports.get("compress")
    chosen = cmp.metrics.get("chosen") if cmp is not None else None
    if cmp is not None and chosen:
        var = (cmp.metrics.get("variants") or {}).get(chosen, {})
        lines.append(
            f"compress: chose {chosen} ({var.get('speedup_b32')}x faster at batch 32, "
            f"{var.get('size_ratio')}x smaller than fp32 torch, recall@1 delta "
            f"{var.get('recall_delta')})"
        )
        budget = (cmp.metrics.get("selection") or {}).get("latency_budget")
        if isinstance(budget, dict):
            lines.append(f"  {budget_sentence(budget)}")
    dep = reports.get("deploy")
    if dep is not None:
        reasons = "; ".join(str(r) for r in dep.metrics.get("reasons", []))
        lines.append(f"deploy: {dep.metrics.get('decision')} ({reasons})")
    return lines


def _outcome_line(reports: dict[str, StageReport]) -> str:
    """What was registered and deployed, in words (nothing is claimed that did not happen)."""
    register, deploy = reports.get("register"), reports.get("deploy")
    if register is None:
        return "registered: nothing (gate blocked or the run stopped before register)"
    version = register.metrics.get("registered_version")
    registered = f"registered: {version}" if version else "registered: nothing"
    decision = deploy.metrics.get("decision", "unknown") if deploy else "not run"
    return f"{registered}; deployed: {decision}"


def _demo_reference_clip(workdir: Path) -> Path:
    """The demo's tiny reference CLIP: pretrained once per work dir (about a minute)."""
    from pairflow.demo.reference_clip import ensure_reference_clip, read_reference_info

    out = workdir / "models" / "reference-clip"
    if read_reference_info(out) is not None:
        return ensure_reference_clip(out)
    with _progress() as progress:
        task = progress.add_task("pretraining the reference CLIP (epochs)", total=None)
        return ensure_reference_clip(
            out, progress=lambda done, total: progress.update(task, completed=done, total=total)
        )


def fresh_demo_store(workdir: Path, tracking_uri: str) -> str:
    """Remove an earlier demo's local MLflow store, so round 1 starts with no champion.

    Only the local sqlite default under ``workdir`` is removed; a store the user pointed at
    (``MLFLOW_TRACKING_URI``, ``mlflow.tracking_uri``) is never touched. Returns what was done.
    """
    prefix = "sqlite:///"
    db = (workdir / "mlflow.db").resolve()
    if tracking_uri != f"{prefix}{db}":
        return f"MLflow store {tracking_uri} is not the demo's own: kept as it is"
    artifacts = db.parent / "mlartifacts"
    existed = db.exists() or artifacts.exists()
    db.unlink(missing_ok=True)
    if artifacts.exists():
        shutil.rmtree(artifacts)
    if existed:
        return f"fresh MLflow store: removed the earlier demo's {db} and {artifacts} (--keep-store)"
    return f"fresh MLflow store: {db}"


def _print_split(title: str, split: list[tuple[str, float]], total: float) -> None:
    """Where the wall time went, longest step first."""
    console.print(f"{title}: {total:.1f} s wall", markup=False, highlight=False)
    for name, seconds in sorted(split, key=lambda kv: -kv[1]):
        share = 100 * seconds / total if total > 0 else 0.0
        console.print(f"  {name:<20}{seconds:7.1f} s  {share:4.0f}%", markup=False, highlight=False)


@app.command("demo")
def demo(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where everything goes.")] = Path(
        ".pairflow/demo"
    ),
    n: Annotated[int, typer.Option("--n", min=20, help="Demo dataset rows.")] = 600,
    seed: Annotated[int, typer.Option("--seed", help="Demo dataset seed.")] = 7,
    rounds: Annotated[
        int,
        typer.Option(
            "--rounds",
            min=1,
            max=5,
            help="Retraining rounds, each on a fresh data drop (seed+round). Round 1 has no "
            "champion; later rounds evaluate against it, report drift and canary-deploy. "
            "Round 3 serves the champion shifted traffic instead: the monitor judges the "
            "logged window and its trigger retrains on it.",
        ),
    ] = 2,
    keep_store: Annotated[
        bool,
        typer.Option(
            "--keep-store",
            help="Keep the MLflow store of an earlier demo (round 1 then meets its champion).",
        ),
    ] = False,
    verbose: VerboseOpt = False,
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Generate demo data and run the whole pipeline locally, round after round."""
    from pairflow.tracking import resolve_tracking_uri

    start = time.perf_counter()
    ensure_writable_dir(workdir, "work dir")
    cfg = load_config(config, [*(set_ or []), f"run.workdir={workdir}"])
    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, workdir)
    if keep_store:
        console.print(f"MLflow store kept: {uri}", markup=False, highlight=False)
    else:
        console.print(fresh_demo_store(workdir, uri), markup=False, highlight=False)
    before = time.perf_counter()
    reference = _demo_reference_clip(workdir)
    split: list[tuple[str, float]] = [("reference CLIP", time.perf_counter() - before)]
    ok = True
    for round_ in range(1, rounds + 1):
        if round_ == MONITOR_ROUND:
            console.rule(
                f"round {round_} of {rounds}: shifted traffic reaches the champion; "
                "the monitor decides"
            )
            ok, round_split = _demo_monitor_round(
                workdir, n, seed + round_ - 1, reference, config, set_ or [], verbose
            )
        else:
            console.rule(f"round {round_} of {rounds}: a new data drop arrives")
            ok, round_split = _demo_round(
                workdir, round_, n, seed + round_ - 1, reference, config, set_ or [], verbose
            )
        split += [(f"r{round_} {name}", secs) for name, secs in round_split]
        if not ok:
            break
    _print_split("demo time split", split, time.perf_counter() - start)
    console.print(f"demo wall time: {time.perf_counter() - start:.1f} s")
    raise typer.Exit(0 if ok else 1)


def _demo_round(
    workdir: Path,
    round_: int,
    n: int,
    seed: int,
    reference: Path,
    config: Path | None,
    sets: list[str],
    verbose: bool,
) -> tuple[bool, list[tuple[str, float]]]:
    from pairflow.demo.synthetic import generate_dataset

    data_dir = workdir / f"data-round{round_}"
    before = time.perf_counter()
    with _progress() as progress:
        task = progress.add_task(f"generating demo data (seed {seed})", total=n)
        gen = generate_dataset(
            data_dir, n, seed, progress=lambda done, total: progress.update(task, completed=done)
        )
    generated = time.perf_counter() - before
    overrides = [
        f"data.source={gen.manifest}",
        f"data.ground_truth={gen.ground_truth}",
        *_demo_overrides(workdir, reference),
        *sets,
    ]
    cfg = load_config(config, overrides)
    injected = sum(gen.defects.values())
    ok, split, _ = run_and_report(
        cfg,
        cache=False,
        verbose=verbose,
        extra=[
            f"demo data: {gen.rows} rows, {injected} injected defects ({gen.ground_truth})",
            f"reference CLIP (pretrained here on a separate clean split): {reference}",
        ],
    )
    return ok, [("generate data", generated), *split]


def _demo_overrides(workdir: Path, reference: Path) -> list[str]:
    """The demo's settings shared by every round (see each comment)."""
    return [
        f"run.workdir={workdir}",
        f"clip_filter.model={reference}",
        # No distilled student in the demo: on ~90 held-out rows its recall moves by several
        # points from one round to the next, so round 1 would ship it in some runs and round
        # 2 could not match its speed (the latency budget would stop the round). Every round
        # ships an int8 variant of the same architecture instead. Distillation:
        # --set compress.distill=true.
        # ~90 held-out queries give 95% intervals of about ±8 points on recall@1: a 1-point
        # non-inferiority margin (the default, for thousands of queries) would block every
        # candidate, better or not. The demo judges at 10 points.
        "evaluate.non_inferiority_margin=0.1",
        # For the same reason compress allows a 3-point recall@1 drop for its variants: one
        # query is ~1.1 points, so the default 1-point tolerance refuses an int8 variant that
        # misses a single query, which happens by chance in some rounds (2 of 88 measured);
        # then only fp32 ONNX is eligible, it is slower than the champion's int8, and the
        # latency budget stops the round.
        "compress.max_recall_drop=0.03",
        # The canary bakes each step until its window has the power (0.9) to detect the
        # minimum effects. One analysed step at 50% and a 5-point error-rate effect keep
        # that to ~600 replayed requests (default steps 10/25/50 with a 2-point effect
        # need several thousand); the decision table shows the sizes each test needed.
        "deploy.steps=[50,100]",
        "deploy.analysis.min_error_rate_increase=0.05",
        # ... and replaying 60 requests/s for 12 s gives each arm ~360 of them, above the
        # ~310 the latency test needs at 50% (measured); a shorter window is inconclusive
        # and extends the bake, never passes.
        "deploy.replay.rate_per_s=60",
        "deploy.bake_s=12",
    ]


MONITOR_ROUND = 3
# Round 3's traffic: requests replayed at the champion, most from a shifted source.
MONITOR_REQUESTS = 300
MONITOR_SHIFTED_SHARE = 0.8
MONITOR_RATE_PER_S = 40.0


def _demo_monitor_round(
    workdir: Path,
    n: int,
    seed: int,
    reference: Path,
    config: Path | None,
    sets: list[str],
    verbose: bool,
) -> tuple[bool, list[tuple[str, float]]]:
    """Serve the champion with the sink beside it, replay shifted traffic, run the monitor;
    its trigger retrains through kfp.local on the logged pairs (window+previous)."""
    from pairflow.demo.monitor_round import replay_against_champion
    from pairflow.demo.synthetic import generate_dataset
    from pairflow.stages.monitor.run import decision_lines, monitor_window
    from pairflow.tracking import resolve_tracking_uri

    split: list[tuple[str, float]] = []
    before = time.perf_counter()
    shifted_n = round(MONITOR_REQUESTS * MONITOR_SHIFTED_SHARE)
    with _progress() as progress:
        task = progress.add_task(f"generating a shifted source (seed {seed})", total=None)
        shifted = generate_dataset(
            workdir / "data-round3-shifted", shifted_n, seed, defects=False, shift=True
        )
        progress.update(task, description=f"generating the usual source (seed {seed})")
        usual = generate_dataset(
            workdir / "data-round3-usual", MONITOR_REQUESTS - shifted_n, seed, defects=False
        )
    split.append(("generate traffic", time.perf_counter() - before))
    log_prefix = workdir / "monitor-log"
    if log_prefix.exists():
        shutil.rmtree(log_prefix)  # a fresh demo judges only this round's traffic
    cfg = load_config(
        config,
        [
            *_demo_overrides(workdir, reference),
            f"monitor.log_prefix={log_prefix}",
            "monitor.retrain_data=window+previous",
            # The triggered candidate learns a new colour palette; on ~100 held-out rows its
            # int8 variants often miss fp32's recall by more than a point, so the only
            # eligible variant is slower than the champion's int8 and compress would stop
            # (measured here). Round 3 lets the canary judge its latency instead.
            "compress.on_latency_budget_miss=canary",
            *sets,
        ],
    )
    uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, workdir)
    before = time.perf_counter()
    with console.status(
        f"serving the champion with the sink; replaying {MONITOR_REQUESTS} requests "
        f"({shifted_n} from a shifted source: new colours) …"
    ):
        traffic = replay_against_champion(
            cfg,
            uri,
            shifted.manifest,
            usual.manifest,
            requests=MONITOR_REQUESTS,
            shifted_share=MONITOR_SHIFTED_SHARE,
            rate_per_s=MONITOR_RATE_PER_S,
            log_dir=workdir / "monitor-logs",
        )
    split.append(("serve + log traffic", time.perf_counter() - before))
    console.print(
        f"traffic: {traffic.requests} requests to {traffic.served_model} ({traffic.shifted} "
        f"shifted, {traffic.usual} usual; {traffic.ok} ok, {traffic.failed} failed), logged "
        f"under {traffic.log_prefix}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    if traffic.failed:
        console.print(f"[red]{traffic.failed} requests failed[/]: see {workdir / 'monitor-logs'}")
        return False, split
    board: list[tuple[str, float]] = []
    status = console.status("monitor: judging the window …")

    def run_here(run_cfg: PairflowConfig) -> LocalRunResult:
        status.stop()  # the step board takes the terminal
        console.rule("round 3: the triggered retrain (kfp.local) on the logged pairs")
        _, steps, result = run_and_report(run_cfg, cache=False, verbose=verbose)
        board.extend(steps)
        return result

    before = time.perf_counter()
    with status:
        outcome = monitor_window(
            cfg,
            window_end=None,
            dry_run=False,
            target=None,
            local_runner=run_here,
            progress=status.update,
        )
    monitor_seconds = time.perf_counter() - before - sum(s for _, s in board)
    split.append(("monitor", monitor_seconds))
    split += board
    console.rule("round 3: the chain")
    for line in decision_lines(outcome):
        console.print(line, markup=False, highlight=False, soft_wrap=True)
    console.print(
        _chain_line(traffic.requests, outcome), markup=False, highlight=False, soft_wrap=True
    )
    if outcome.local_result is None:
        return True, split
    return bool(outcome.local_result.succeeded), split


def _chain_line(requests: int, outcome: MonitorOutcome) -> str:
    """Traffic → logged window → drift → decision → retrain → gate → canary, in one line."""
    v, d = outcome.verdict, outcome.decision
    drift = "drift" if v.drift else "no drift"
    if v.score_dropped:
        drift += " + score drop"
    parts = [f"{requests} requests", f"{v.rows} logged pairs judged", drift, d.reason]
    sub, result = outcome.submitted, outcome.local_result
    if sub is not None and outcome.snapshot is not None:
        parts.append(f"retrain {sub.run_id} on {outcome.snapshot.rows} rows ({sub.state})")
    reports = getattr(result, "reports", None) or {}
    ev, dep, reg = reports.get("evaluate"), reports.get("deploy"), reports.get("register")
    if ev is not None:
        gate = (ev.metrics.get("gate") or {}).get("passed")
        parts.append("gate passed" if gate else "gate blocked")
    if reg is not None and reg.metrics.get("registered_version"):
        parts.append(f"registered {reg.metrics['registered_version']}")
    elif ev is not None and sub is not None and sub.state == "FAILED":
        failed = getattr(result, "error", "") or "a step failed"
        parts.append(f"stopped before register ({failed})")
    if dep is not None:
        parts.append(f"canary: {dep.metrics.get('decision')}")
    return "round 3 chain: " + " → ".join(parts)


# ---------------------------------------------------------------------------------------------
# standalone stages


@app.command("ingest")
def ingest_cmd(
    input_: Annotated[str, typer.Option("--input", help="Source: folder, manifest, tars, s3://.")],
    out: OutOpt,
    fmt: Annotated[str, typer.Option("--format", help="auto|folder|parquet|jsonl|webdataset")] = (
        "auto"
    ),
    config: ConfigOpt = None,
    set_: SetOpt = None,
) -> None:
    """Ingest one source into kept.parquet / rejected.parquet / report.json."""
    from pairflow.report import StageOutputs
    from pairflow.stages.ingest.ingest import run_ingest

    cfg = load_config(config, [*(set_ or []), f"data.format={fmt}"])
    ensure_writable_dir(out)
    report = run_ingest(input_, StageOutputs.in_dir(out), cfg.data)
    console.print(
        f"ingest: {report.rows_in} in, {report.rows_out} kept, "
        f"{report.rows_rejected} rejected {report.rejected or ''} → {out}"
    )


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
    from pairflow.tracking import resolve_tracking_uri
    from pairflow.ui_server import run_until_signalled

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
    from pairflow.kubeflow import cli as kubeflow_cli
    from pairflow.registry import cli as registry_cli
    from pairflow.serve import cli as serve_cli
    from pairflow.serve.requestlog import sink_cli
    from pairflow.stages.clip_filter import cli as clip_filter_cli
    from pairflow.stages.compress import cli as compress_cli
    from pairflow.stages.dedupe import cli as dedupe_cli
    from pairflow.stages.deploy import cli as deploy_cli
    from pairflow.stages.evaluate import cli as evaluate_cli
    from pairflow.stages.monitor import cli as monitor_cli
    from pairflow.stages.register import cli as register_cli
    from pairflow.stages.train import cli as train_cli
    from pairflow.stages.validate import cli as validate_cli

    for module in (
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
    from typer._click.exceptions import ClickException, UsageError

    from pairflow.cli_errors import is_help_screen, usage_line

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
