"""MLflow wiring shared by every step: tracking URI resolution, MLflow's HTTP retry policy and
the pipeline-run record.

The tracking URI is resolved in one place, :func:`resolve_mlflow_settings`: the resolve-config
step writes the resolved URI into the run's config, and every CLI calls it once after loading
its config. Steps read ``cfg.mlflow.tracking_uri`` as it is.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from pairflow.config import MlflowConfig, PairflowConfig
from pairflow.errors import ConfigError
from pairflow.report import StageReport

log = logging.getLogger(__name__)

KFP_RUN_TAG = "pairflow.kfp_run_id"
# Set on every pod KFP v2 runs (kubeflow/pipelines backend/src/v2/compiler/argocompiler/
# container.go, ``commonEnvs``: KFP_POD_NAME / KFP_POD_UID from the downward API).
KFP_POD_ENV = "KFP_POD_NAME"


class TrackingConfigError(ConfigError):
    """No tracking URI where the local sqlite default would lose the records."""


def in_kfp_pod() -> bool:
    """True inside a pod that a Kubeflow Pipelines run started."""
    return bool(os.environ.get(KFP_POD_ENV, "").strip())


def resolve_tracking_uri(configured: str, workdir: str | Path) -> str:
    """Config value, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<workdir>/mlflow.db``.

    The sqlite default is local-only: inside a KFP pod it would be a file that disappears with
    the pod, so there a missing URI is a :class:`TrackingConfigError`.
    """
    if configured:
        return configured
    env = os.environ.get("MLFLOW_TRACKING_URI", "")
    if env:
        return env
    if in_kfp_pod():
        raise TrackingConfigError(
            "mlflow.tracking_uri: not set in a Kubeflow pipeline pod (nor $MLFLOW_TRACKING_URI): "
            "set MLFLOW_TRACKING_URI in the kubeflow.env_config_map ConfigMap or the "
            "mlflow_tracking_uri run parameter; the sqlite default is local-only"
        )
    db = Path(workdir).expanduser().resolve() / "mlflow.db"
    db.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{db}"


# MLflow reads its HTTP retry policy from these variables at each request (mlflow.utils.rest_utils).
HTTP_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
HTTP_BACKOFF_ENV = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
HTTP_TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"


def http_policy_env(m: MlflowConfig) -> dict[str, str]:
    """MLflow's HTTP retry policy of ``mlflow.http_*``, as the environment MLflow reads."""
    return {
        HTTP_RETRIES_ENV: str(m.http_retries),
        HTTP_BACKOFF_ENV: str(m.http_backoff_factor),
        HTTP_TIMEOUT_ENV: str(m.http_timeout_s),
    }


def apply_http_policy(m: MlflowConfig) -> None:
    """Make ``mlflow.http_*`` the retry policy of every MLflow request of this process (and of
    the processes it starts, e.g. torchrun workers): the one retry layer below KFP's."""
    os.environ.update(http_policy_env(m))


def http_attempts(tracking_uri: str) -> int:
    """Attempts MLflow makes per request under the current policy (1 for a local store)."""
    if not tracking_uri.startswith(("http://", "https://")):
        return 1
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow.environment_variables import MLFLOW_HTTP_REQUEST_MAX_RETRIES as retries

    return int(os.environ.get(HTTP_RETRIES_ENV, retries.default)) + 1


def resolve_mlflow_settings(cfg: PairflowConfig) -> PairflowConfig:
    """Resolve ``cfg.mlflow.tracking_uri`` in place (:func:`resolve_tracking_uri`) and apply the
    HTTP retry policy; returns ``cfg``. The one place a run's MLflow settings are resolved:
    resolve-config before it writes the run's config, each CLI after loading its config.
    In a KFP pod with no tracking URI it raises :class:`TrackingConfigError`."""
    cfg.mlflow.tracking_uri = resolve_tracking_uri(cfg.mlflow.tracking_uri, cfg.run.workdir)
    apply_http_policy(cfg.mlflow)
    return cfg


def redact_uri(uri: str) -> str:
    """Drop credentials from a URI before it reaches a log or an error message."""
    if "@" in uri and "://" in uri:
        scheme, rest = uri.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return uri


def _client(tracking_uri: str) -> Any:
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """Return the id of experiment ``name``, creating it when missing."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return str(exp.experiment_id)
    return str(client.create_experiment(name, artifact_location=_artifact_location(tracking_uri)))


def _artifact_location(tracking_uri: str) -> str | None:
    """For a sqlite store, artifacts live beside the DB (MLflow's default is ``./mlruns``
    under whatever directory the step happens to run in); servers choose their own."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    return (Path(tracking_uri[len(prefix) :]).parent / "mlartifacts").resolve().as_uri()


def find_pipeline_run(tracking_uri: str, experiment: str, kfp_run_id: str) -> str | None:
    """The MLflow run id recording KFP run ``kfp_run_id``, if one exists.

    Steps get the run's id from resolve-config; this tag search remains for the three places
    that cannot: resolve-config itself (a retried task finds the run it opened), the exit
    handler (it runs when resolve-config failed, so it cannot take its output) and a
    standalone ``pairflow register --kfp-run-id``."""
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id], filter_string=f"tags.`{KFP_RUN_TAG}` = '{kfp_run_id}'", max_results=1
    )
    return str(runs[0].info.run_id) if runs else None


def start_pipeline_run(cfg: PairflowConfig, kfp_run_id: str, kfp_run_name: str) -> str:
    """Create (or find) the MLflow run that records this pipeline run; log config params."""
    uri, name = cfg.mlflow.tracking_uri, cfg.mlflow.experiment
    existing = find_pipeline_run(uri, name, kfp_run_id)
    if existing:
        return existing
    exp_id = ensure_experiment(uri, name)
    client = _client(uri)
    run = client.create_run(
        exp_id,
        run_name=kfp_run_name or kfp_run_id,
        tags={
            KFP_RUN_TAG: kfp_run_id,
            "pairflow.kfp_run_name": kfp_run_name,
            "pairflow.config_hash": cfg.digest(),
            "mlflow.source.type": "JOB",
        },
    )
    run_id = str(run.info.run_id)
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow.entities import Param

    params = [Param(k, str(v)[:500]) for k, v in _flatten(cfg.to_dict()).items()]
    for i in range(0, len(params), 100):
        client.log_batch(run_id, params=params[i : i + 100])
    client.log_dict(run_id, cfg.to_dict(), "config/config.json")
    return run_id


def log_stage_report(cfg: PairflowConfig, run_id: str, report: StageReport) -> None:
    """Log a stage's row counts and numeric metrics to the pipeline's MLflow run ``run_id``
    (resolve-config's output), and its JSON."""
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow.entities import Metric

    client = _client(cfg.mlflow.tracking_uri)
    values: dict[str, float] = {
        "rows_in": report.rows_in,
        "rows_out": report.rows_out,
        "rows_rejected": report.rows_rejected,
        "seconds": report.seconds,
    }
    for key, val in _flatten(report.metrics).items():
        if isinstance(val, int | float) and not isinstance(val, bool):
            values[key] = float(val)
    metrics = [Metric(f"{report.stage}.{k}", float(v), 0, 0) for k, v in values.items()]
    client.log_batch(run_id, metrics=metrics)
    client.set_tag(run_id, f"pairflow.stage.{report.stage}.implemented", str(report.implemented))
    client.log_dict(run_id, report.to_json_dict(), f"reports/{report.stage}.json")


def record_final_status(
    tracking_uri: str, experiment: str, kfp_run_id: str, state: str, error: str = ""
) -> str | None:
    """Mark the pipeline's MLflow run FINISHED/FAILED with the KFP final state and error."""
    run_id = find_pipeline_run(tracking_uri, experiment, kfp_run_id)
    if run_id is None:
        log.warning("no MLflow run for KFP run %s (failed before resolve-config?)", kfp_run_id)
        return None
    client = _client(tracking_uri)
    client.set_tag(run_id, "pairflow.final_state", state)
    if error:
        client.set_tag(run_id, "pairflow.error", error[:5000])
    client.set_terminated(run_id, status="FINISHED" if state == "SUCCEEDED" else "FAILED")
    return run_id


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, val in data.items():
        name = f"{prefix}{key}"
        if isinstance(val, dict):
            out.update(_flatten(val, f"{name}."))
        else:
            out[name] = val
    return out
