"""``pairflow demo``: generate the demo data, pretrain the tiny reference CLIP, run the
pipeline twice (a champion, then a challenger), and with ``--rounds 3`` replay shifted traffic
so the monitor triggers a third, guarded retrain.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from pairflow.cli_options import (
    ConfigOpt,
    SetOpt,
    VerboseOpt,
    console,
    ensure_writable_dir,
    progress_bar,
)
from pairflow.config import PairflowConfig, load_config
from pairflow.metrics import DeployMetrics, EvaluateMetrics, RegisterMetrics
from pairflow.run_console import print_split, run_and_report
from pairflow.tracking import resolve_mlflow_settings

if TYPE_CHECKING:
    from pairflow.local_run import LocalRunResult
    from pairflow.stages.monitor.run import MonitorOutcome


def _demo_reference_clip(workdir: Path) -> Path:
    """The demo's tiny reference CLIP: pretrained once per work dir (about a minute)."""
    # lazy: boto3, botocore, pandas, pyarrow, torch, transformers (slow to import); only this path
    # needs it
    from pairflow.demo.reference_clip import ensure_reference_clip, read_reference_info

    out = workdir / "models" / "reference-clip"
    if read_reference_info(out) is not None:
        return ensure_reference_clip(out)
    with progress_bar() as progress:
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

    start = time.perf_counter()
    ensure_writable_dir(workdir, "work dir")
    cfg = load_config(config, [*(set_ or []), f"run.workdir={workdir}"])
    uri = resolve_mlflow_settings(cfg).mlflow.tracking_uri
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
    print_split("demo time split", split, time.perf_counter() - start)
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
    # lazy: pandas, pyarrow (slow to import); only this path needs it
    from pairflow.demo.synthetic import generate_dataset

    data_dir = workdir / f"data-round{round_}"
    before = time.perf_counter()
    with progress_bar() as progress:
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
    # lazy: aiohttp, boto3, botocore, pandas, pyarrow, scipy (slow to import); only this path needs
    # it
    from pairflow.demo.monitor_round import replay_against_champion
    from pairflow.demo.synthetic import generate_dataset
    from pairflow.stages.monitor.run import decision_lines, monitor_window

    split: list[tuple[str, float]] = []
    before = time.perf_counter()
    shifted_n = round(MONITOR_REQUESTS * MONITOR_SHIFTED_SHARE)
    with progress_bar() as progress:
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
    uri = resolve_mlflow_settings(cfg).mlflow.tracking_uri
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
        gate = ev.metrics_as(EvaluateMetrics).gate
        parts.append("gate passed" if gate is not None and gate.passed else "gate blocked")
    version = reg.metrics_as(RegisterMetrics).registered_version if reg is not None else None
    if version:
        parts.append(f"registered {version}")
    elif ev is not None and sub is not None and sub.state == "FAILED":
        failed = getattr(result, "error", "") or "a step failed"
        parts.append(f"stopped before register ({failed})")
    if dep is not None:
        parts.append(f"canary: {dep.metrics_as(DeployMetrics).decision}")
    return "round 3 chain: " + " → ".join(parts)


MONITOR_ROUND = 3


# Round 3's traffic: requests replayed at the champion, most from a shifted source.
MONITOR_REQUESTS = 300


MONITOR_SHIFTED_SHARE = 0.8


MONITOR_RATE_PER_S = 40.0


def register(app: typer.Typer) -> None:
    """Add ``demo`` to ``app``."""
    app.command("demo")(demo)
