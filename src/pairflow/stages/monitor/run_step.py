"""Plain-Python body of the KFP ``monitor`` pipeline's one step (``components/monitor.py``).

In a pod there is no checkout and no local pipeline runner: a triggered retrain is submitted
to ``kfp_host`` (the in-cluster KFP API by default) with the pod's credentials
(``kubeflow.auth``: the projected ServiceAccount token, :mod:`pairflow.kubeflow.auth`), as
the version ``retrain_version`` or, when empty, the version the retrain recurring run is
pinned to.

The KFP executor runs a component with ``_KFP_RUNTIME=true``, under which ``kfp.client``
cannot be imported (kfp 2.17: ``kfp.dsl`` then skips its compile-time modules, and
``kfp.client`` → ``kfp.compiler`` fails on a circular import). The pass therefore runs in a
child Python without that variable (``python -m pairflow.stages.monitor.run_step``), its output in
the step's log.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from pairflow import tracking
from pairflow.config import config_from_dict
from pairflow.kubeflow.monitor_params import apply_params
from pairflow.kubeflow.publish import Endpoint
from pairflow.stages.monitor.run import MonitorError, MonitorOutcome, decision_lines, monitor_window
from pairflow.stages.monitor.trigger import KfpTarget

log = logging.getLogger("pairflow.stages.monitor")


def _window_end(text: str) -> datetime | None:
    if not text.strip():
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise MonitorError(f"window_end {text!r}: not an ISO 8601 time") from exc
    if value.tzinfo is None:
        raise MonitorError(f"window_end {text!r}: give a timezone (e.g. Z or +00:00)")
    return value


def outcome_json(outcome: MonitorOutcome) -> dict[str, Any]:
    """The pass as one JSON document (the step's ``decision`` artifact)."""
    sub = outcome.submitted
    return {
        "monitor_run_id": outcome.monitor_run_id,
        "consecutive_drift": outcome.consecutive_drift,
        "verdict": outcome.verdict.to_dict(),
        "decision": outcome.decision.to_dict(),
        "snapshot": outcome.snapshot.to_dict() if outcome.snapshot else None,
        "submitted": None
        if sub is None
        else {
            "backend": sub.backend,
            "run_id": sub.run_id,
            "run_name": sub.run_name,
            "pipeline_version": sub.pipeline_version,
            "pipeline_version_id": sub.pipeline_version_id,
            "data_source": sub.data_source,
            "reused": sub.reused,
        },
    }


KFP_RUNTIME_ENV = "_KFP_RUNTIME"


def monitor_step(
    defaults_json: str,
    params: dict[str, Any],
    window_end: str,
    dry_run: bool,
    kfp_host: str,
    retrain_version: str,
    decision_out: str,
    report_out: str,
) -> str:
    """One monitor pass; writes the decision JSON and the drift HTML; returns the decision."""
    args: dict[str, Any] = {
        "defaults_json": defaults_json,
        "params": params,
        "window_end": window_end,
        "dry_run": dry_run,
        "kfp_host": kfp_host,
        "retrain_version": retrain_version,
        "decision_out": decision_out,
        "report_out": report_out,
    }
    if os.environ.get(KFP_RUNTIME_ENV, "") != "true":
        return run_pass(**args)
    env = {k: v for k, v in os.environ.items() if k != KFP_RUNTIME_ENV}
    with tempfile.TemporaryDirectory(prefix="pairflow-monitor-") as tmp:
        spec = Path(tmp) / "args.json"
        message = Path(tmp) / "decision.txt"
        spec.write_text(json.dumps({**args, "message_out": str(message)}))
        proc = subprocess.run(
            [sys.executable, "-m", "pairflow.stages.monitor.run_step", str(spec)],
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            raise MonitorError(f"monitor pass failed (exit {proc.returncode}); see the log above")
        return message.read_text()


def main(argv: list[str]) -> int:
    """``python -m pairflow.stages.monitor.run_step ARGS.json``: :func:`run_pass` with its output
    message written to ``message_out``."""
    args = json.loads(Path(argv[0]).read_text())
    message_out = Path(args.pop("message_out"))
    message_out.write_text(run_pass(**args))
    return 0


def run_pass(
    defaults_json: str,
    params: dict[str, Any],
    window_end: str,
    dry_run: bool,
    kfp_host: str,
    retrain_version: str,
    decision_out: str,
    report_out: str,
) -> str:
    """The pass itself (see :func:`monitor_step`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = apply_params(config_from_dict(json.loads(defaults_json), "compiled config"), params)
    try:
        cfg.mlflow.tracking_uri = tracking.resolve_tracking_uri(
            cfg.mlflow.tracking_uri, cfg.run.workdir
        )
    except tracking.TrackingConfigError as exc:
        raise SystemExit(f"pairflow: {exc}") from None
    if not kfp_host and cfg.monitor.trigger and not dry_run:
        raise MonitorError(
            "kfp_host: empty; the monitor pipeline submits retrains through the KFP API "
            "(or set dry_run / monitor_trigger=false)"
        )
    target = None
    if kfp_host:
        target = KfpTarget(Endpoint(kfp_host, cfg.kubeflow.token_env), version=retrain_version)
    outcome = monitor_window(
        cfg,
        window_end=_window_end(window_end),
        dry_run=dry_run,
        target=target,
        progress=log.info,
    )
    for line in decision_lines(outcome):
        log.info("%s", line)
    Path(decision_out).parent.mkdir(parents=True, exist_ok=True)
    Path(decision_out).write_text(json.dumps(outcome_json(outcome), indent=2, default=str))
    html = Path(outcome.verdict.report_html) if outcome.verdict.report_html else None
    Path(report_out).parent.mkdir(parents=True, exist_ok=True)
    if html is not None and html.is_file():
        shutil.copyfile(html, report_out)
    else:
        Path(report_out).write_text(
            "<html><body><p>No drift report: " + outcome.decision.message + "</p></body></html>"
        )
    return outcome.decision.message


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
