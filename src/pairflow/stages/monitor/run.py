"""One monitor pass over a window: read the logged traffic, judge it against the champion's
serving reference, record the verdict and gauges, decide, and (maybe) start a retrain.

``pairflow monitor`` and the KFP ``monitor`` pipeline both call :func:`monitor_window`. The
decision part, :func:`act_on_verdict`, takes a verdict already recorded in MLflow, so the
guardrails can be exercised on verdicts of any shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from pairflow.config import PairflowConfig
from pairflow.errors import PairflowError
from pairflow.serve.requestlog.window import read_window
from pairflow.stages.monitor.gauges import push_gauges
from pairflow.stages.monitor.policy import Decision, decide
from pairflow.stages.monitor.snapshot import (
    Snapshot,
    build_snapshot,
    training_manifest_uri,
    window_slug,
)
from pairflow.stages.monitor.trigger import KfpTarget, Submitted, run_local, submit_kfp
from pairflow.stages.monitor.trigger_record import (
    load_history,
    mark_retrain_state,
    mark_submission,
    record_decision,
)
from pairflow.stages.monitor.verdict import WindowId, WindowVerdict

Progress = Callable[[str], None]
LocalRunner = Callable[[PairflowConfig], Any]


class MonitorError(PairflowError):
    """A monitor pass could not finish (its decision is recorded before this is raised)."""


class ChampionLike(Protocol):
    """What the trigger needs of the champion (``ChampionReference`` has it)."""

    @property
    def model_name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def run_id(self) -> str: ...


@dataclass
class MonitorOutcome:
    """Everything one pass found and did, for the CLI, the pipeline step and the demo."""

    verdict: WindowVerdict
    decision: Decision
    monitor_run_id: str
    consecutive_drift: int | None = None
    snapshot: Snapshot | None = None
    submitted: Submitted | None = None
    local_result: Any = None


def _now() -> datetime:
    return datetime.now(UTC)


def window_for(end: datetime, hours: float, champion: ChampionLike) -> tuple[WindowId, datetime]:
    """The window of ``hours`` ending at ``end`` (UTC, to the second), and its start."""
    if end.tzinfo is None:
        raise MonitorError(f"--window-end {end.isoformat()}: give a timezone (e.g. Z or +00:00)")
    end = end.astimezone(UTC).replace(microsecond=0)
    start = end - timedelta(hours=hours)
    iso = {"timespec": "seconds"}
    window = WindowId(
        start.isoformat(**iso), end.isoformat(**iso), champion.model_name, champion.version
    )
    return window, start


def act_on_verdict(
    cfg: PairflowConfig,
    verdict: WindowVerdict,
    records: pa.Table,
    champion: ChampionLike,
    monitor_run_id: str,
    *,
    dry_run: bool,
    target: KfpTarget | None,
    local_runner: LocalRunner | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> MonitorOutcome:
    """Decide on ``verdict`` (recorded on ``monitor_run_id``), record it, and on ``trigger``
    build the retrain data and start the run: on KFP with ``target``, else locally through
    ``local_runner`` (kfp.local). A failed start is recorded on the run, then raised."""
    say = progress or (lambda _msg: None)
    uri = cfg.mlflow.tracking_uri
    now = now or _now()
    history = load_history(uri, cfg.monitor.experiment, champion.model_name)
    decision = decide(verdict, history, cfg.monitor, now, dry_run)
    record_decision(uri, monitor_run_id, decision, champion.model_name, dry_run)
    outcome = MonitorOutcome(verdict, decision, monitor_run_id)
    if not decision.triggered:
        return outcome
    if target is None and local_runner is None:
        raise MonitorError("monitor: a trigger needs a KFP endpoint (--host) or a local runner")
    triggered_at = now.isoformat(timespec="seconds")
    mark_submission(uri, monitor_run_id, "in_flight", triggered_at=triggered_at)
    try:
        previous = ""
        if cfg.monitor.retrain_data == "window+previous":
            label = f"models:/{champion.model_name}/{champion.version}"
            previous = training_manifest_uri(uri, champion.run_id, label)
        say(f"writing the retrain data ({cfg.monitor.retrain_data}) …")
        outcome.snapshot = build_snapshot(
            records,
            verdict.window,
            log_prefix=cfg.monitor.log_prefix,
            retrain_data=cfg.monitor.retrain_data,
            s3=cfg.data.s3,
            previous_uri=previous,
        )
        source = outcome.snapshot.uri
        if target is not None:
            say(f"submitting retrain to {target.endpoint.host} …")
            outcome.submitted = submit_kfp(cfg, target, source, decision.window_key)
        else:
            assert local_runner is not None
            say("running retrain locally (kfp.local) …")
            mark_submission(uri, monitor_run_id, "in_flight", backend="local", data_source=source)
            outcome.submitted, outcome.local_result = run_local(
                cfg, source, decision.window_key, local_runner
            )
    except Exception as exc:
        mark_submission(uri, monitor_run_id, "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    sub = outcome.submitted
    mark_submission(
        uri,
        monitor_run_id,
        "submitted",
        retrain_run_id=sub.run_id,
        backend=sub.backend,
        data_source=sub.data_source,
        pipeline_version=f"{sub.pipeline_version} ({sub.pipeline_version_id})"
        if sub.pipeline_version_id
        else sub.pipeline_version,
    )
    if sub.state:
        mark_retrain_state(uri, monitor_run_id, sub.state)
    return outcome


def monitor_window(
    cfg: PairflowConfig,
    *,
    window_end: datetime | None,
    dry_run: bool,
    target: KfpTarget | None,
    local_runner: LocalRunner | None = None,
    now: datetime | None = None,
    progress: Progress | None = None,
) -> MonitorOutcome:
    """A whole pass: window → verdict (recorded, gauges pushed) → decision → retrain."""
    # lazy: mlflow (slow to import); only this path needs it
    from pairflow.stages.monitor.drift import judge_window
    from pairflow.stages.monitor.record import consecutive_drift_windows, record_verdict
    from pairflow.stages.monitor.reference import load_champion_reference

    say = progress or (lambda _msg: None)
    if not cfg.monitor.log_prefix:
        raise MonitorError("monitor.log_prefix: empty; set where the sink writes the logged pairs")
    now = now or _now()
    say("loading the champion's serving reference …")
    champion = load_champion_reference(cfg)
    window, start = window_for(window_end or now, cfg.monitor.window_hours, champion)
    end = datetime.fromisoformat(window.end)
    say(f"reading logged traffic {window.start} .. {window.end} …")
    records = read_window(cfg.monitor.log_prefix, start, end, cfg.data.s3)
    html = Path(cfg.run.workdir).expanduser() / "monitor" / window_slug(window) / "drift.html"
    html.parent.mkdir(parents=True, exist_ok=True)
    say(f"judging {records.num_rows} logged rows against v{champion.version}'s reference …")
    verdict = judge_window(records, champion, cfg.monitor, window, html)
    run_id = record_verdict(verdict, champion, cfg)
    consecutive = consecutive_drift_windows(cfg, champion.model_name)
    push_gauges(verdict, consecutive, cfg.monitor)
    outcome = act_on_verdict(
        cfg,
        verdict,
        records,
        champion,
        run_id,
        dry_run=dry_run,
        target=target,
        local_runner=local_runner,
        now=now,
        progress=progress,
    )
    outcome.consecutive_drift = consecutive
    return outcome


def decision_lines(outcome: MonitorOutcome) -> list[str]:
    """The pass in words: the window's figures, then the decision and what it started."""
    v, d = outcome.verdict, outcome.decision
    n = d.numbers
    figures = [f"{v.rows} rows (min {n['min_window_rows']}), reference {v.reference_rows}"]
    if v.drift_share is not None:
        figures.append(f"drift share {v.drift_share:.2f} (limit {n['drift_share_limit']:.2f})")
    for tower, auc in sorted(v.embedding_auc.items()):
        figures.append(f"{tower} AUC {auc:.3f} (limit {n['embedding_auc_limit']:.2f})")
    if v.score_mean is not None and v.reference_score_mean is not None:
        figures.append(
            f"mean score {v.score_mean:.3f} vs {v.reference_score_mean:.3f} "
            f"(drop {v.score_drop or 0.0:+.3f}, margin {n['score_drop_margin']:.3f})"
        )
    if outcome.consecutive_drift is not None:
        figures.append(f"{outcome.consecutive_drift} drifted window(s) in a row")
    lines = [
        f"window {d.window_key}: " + "; ".join(figures),
        f"decision: {d.outcome} — {d.message} (MLflow run {outcome.monitor_run_id})",
    ]
    snap = outcome.snapshot
    if snap is not None:
        left = ", ".join(f"{k} {c}" for k, c in snap.rejected.items()) or "none"
        lines.append(
            f"retrain data: {snap.rows} rows = {snap.window_rows_out} logged pairs + "
            f"{snap.previous_rows_out} previous ({snap.retrain_data}); left out: {left} "
            f"→ {snap.uri}"
        )
    sub = outcome.submitted
    if sub is not None:
        how = "found (already submitted)" if sub.reused else "started"
        where = (
            f"pipeline version {sub.pipeline_version} ({sub.pipeline_version_id})"
            if sub.backend == "kfp"
            else "kfp.local"
        )
        state = f", {sub.state}" if sub.state else ""
        lines.append(f"retrain run {sub.run_id} {how} on {where}: {sub.run_name!r}{state}")
    return lines
