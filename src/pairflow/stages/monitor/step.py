"""The KFP ``monitor`` pipeline's one step: :func:`run` (``components/monitor.py``).

In a pod there is no checkout and no local pipeline runner: a triggered retrain is submitted
to ``kfp_host`` (the in-cluster KFP API by default) with the pod's credentials
(``kubeflow.auth``: the projected ServiceAccount token, :mod:`pairflow.kubeflow.auth`), as
the version ``retrain_version`` or, when empty, the version the retrain recurring run is
pinned to.

The KFP executor runs a component with ``_KFP_RUNTIME=true``, under which ``kfp.client``
cannot be imported (kfp 2.17: ``kfp.dsl`` then skips its compile-time modules, and
``kfp.client`` → ``kfp.compiler`` fails on a circular import). The pass therefore runs in a
child Python without that variable (``python -m pairflow.stages.monitor.step``), its output in
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
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from pairflow.config import PairflowConfig, config_from_dict
from pairflow.kubeflow.monitor_params import apply_params
from pairflow.kubeflow.publish import Endpoint
from pairflow.stage_io import resolve_step_mlflow
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


@dataclass(frozen=True)
class MonitorInputs:
    """The run's parameters (config fields by flat name) and the pass's own options."""

    params: dict[str, Any]
    window_end: str = ""
    dry_run: bool = False
    kfp_host: str = ""
    retrain_version: str = ""


@dataclass(frozen=True)
class MonitorOutputs:
    """The decision JSON and the drift HTML page."""

    decision: Path
    report: Path


def run(cfg: PairflowConfig, inputs: MonitorInputs, outputs: MonitorOutputs) -> str:
    """One monitor pass over ``cfg`` (the compiled-in config) with ``inputs.params`` applied;
    writes the decision JSON and the drift HTML; returns the decision line."""
    if os.environ.get(KFP_RUNTIME_ENV, "") != "true":
        return run_pass(cfg, inputs, outputs)
    env = {k: v for k, v in os.environ.items() if k != KFP_RUNTIME_ENV}
    with tempfile.TemporaryDirectory(prefix="pairflow-monitor-") as tmp:
        spec = Path(tmp) / "args.json"
        message = Path(tmp) / "decision.txt"
        args = {
            "config": cfg.to_json(),
            "inputs": asdict(inputs),
            "outputs": {"decision": str(outputs.decision), "report": str(outputs.report)},
            "message_out": str(message),
        }
        spec.write_text(json.dumps(args))
        proc = subprocess.run(
            [sys.executable, "-m", "pairflow.stages.monitor.step", str(spec)],
            env=env,
            check=False,
        )
        if proc.returncode != 0:
            raise MonitorError(f"monitor pass failed (exit {proc.returncode}); see the log above")
        return message.read_text()


def main(argv: list[str]) -> int:
    """``python -m pairflow.stages.monitor.step ARGS.json``: :func:`run_pass` with its output
    message written to ``message_out``."""
    args = json.loads(Path(argv[0]).read_text())
    cfg = config_from_dict(json.loads(args["config"]), "compiled config")
    outputs = MonitorOutputs(**{k: Path(v) for k, v in args["outputs"].items()})
    message = run_pass(cfg, MonitorInputs(**args["inputs"]), outputs)
    Path(args["message_out"]).write_text(message)
    return 0


def run_pass(cfg: PairflowConfig, inputs: MonitorInputs, outputs: MonitorOutputs) -> str:
    """The pass itself (see :func:`run`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cfg = apply_params(cfg, inputs.params)
    kfp_host, dry_run = inputs.kfp_host, inputs.dry_run
    cfg = resolve_step_mlflow(cfg)
    if not kfp_host and cfg.monitor.trigger and not dry_run:
        raise MonitorError(
            "kfp_host: empty; the monitor pipeline submits retrains through the KFP API "
            "(or set dry_run / monitor_trigger=false)"
        )
    target = None
    if kfp_host:
        target = KfpTarget(
            Endpoint(kfp_host, cfg.kubeflow.token_env), version=inputs.retrain_version
        )
    outcome = monitor_window(
        cfg,
        window_end=_window_end(inputs.window_end),
        dry_run=dry_run,
        target=target,
        progress=log.info,
    )
    for line in decision_lines(outcome):
        log.info("%s", line)
    outputs.decision.parent.mkdir(parents=True, exist_ok=True)
    outputs.decision.write_text(json.dumps(outcome_json(outcome), indent=2, default=str))
    html = Path(outcome.verdict.report_html) if outcome.verdict.report_html else None
    outputs.report.parent.mkdir(parents=True, exist_ok=True)
    if html is not None and html.is_file():
        shutil.copyfile(html, outputs.report)
    else:
        outputs.report.write_text(
            "<html><body><p>No drift report: " + outcome.decision.message + "</p></body></html>"
        )
    return outcome.decision.message


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
