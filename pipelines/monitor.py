"""The ``monitor`` pipeline: one step that judges the last window of served traffic against
the champion's serving reference and, when the policy says so, submits a ``retrain`` run
through the KFP API (guardrails and records: :mod:`pairflow.stages.monitor.run`).

Compiled next to ``retrain`` (``pipelines/compiled/monitor.yaml``) with the same platform
config: the runtime image ``kubeflow.base_image``, and the ConfigMap/Secrets env of
``pairflow.pipelines.retrain._cluster`` (imported, so the two cannot differ). The pod also
gets the label ``access-ml-pipeline: "true"``, which Kubeflow's ``access-ml-pipeline``
PodDefault selects to mount a ServiceAccount token for the KFP API (audience
``pipelines.kubeflow.org``) and set ``KF_PIPELINES_SA_TOKEN_PATH`` (Kubeflow docs, "Connect
the Pipelines SDK to Kubeflow Pipelines", full Kubeflow from inside the cluster). Scheduled
with ``pairflow schedule --pipeline monitor``.
"""

from __future__ import annotations

import inspect
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl import pipeline_context

from pairflow.components.monitor import monitor_window
from pairflow.config import PairflowConfig
from pairflow.kubeflow.monitor_params import config_params, extra_defaults
from pairflow.pipelines.retrain import _cluster

PIPELINE_NAME = "monitor"
DESCRIPTION = (
    "pairflow monitor: judge the last window of served traffic against the champion's "
    "reference, record the verdict, and submit a guarded retrain on drift."
)
KFP_API_LABEL = ("access-ml-pipeline", "true")
_EXTRA_DOCS = {
    "window_end": "End of the window, ISO 8601 with a timezone; empty: the run's start.",
    "dry_run": "Judge and record the decision; submit nothing.",
    "kfp_host": "KFP API the retrain is submitted to (in-cluster service by default).",
    "retrain_version": "Retrain pipeline version to run; empty: the one the retrain "
    "recurring run (kubeflow.schedule_name) is pinned to.",
}


def build_pipeline(base: PairflowConfig | None = None) -> Any:
    """The ``monitor`` pipeline with parameters defaulting to ``base`` (default config)."""
    cfg = base or PairflowConfig()
    fields = config_params(cfg)
    extras = extra_defaults(cfg)
    names = [p.name for p in fields] + list(extras)

    def monitor(*args: Any) -> None:
        p = dict(zip(names, args, strict=True))
        step = monitor_window(
            defaults_json=cfg.to_json(),
            params={f.name: p[f.name] for f in fields},
            window_end=p["window_end"],
            dry_run=p["dry_run"],
            kfp_host=p["kfp_host"],
            retrain_version=p["retrain_version"],
        ).set_display_name("monitor window")
        # It reads MLflow and the logged window: state outside its inputs.
        step.set_caching_options(enable_caching=False)
        kubernetes.add_pod_label(step, *KFP_API_LABEL)
        for task in pipeline_context.Pipeline.get_default_pipeline().tasks.values():
            _cluster(task, cfg.kubeflow)

    params = [
        inspect.Parameter(
            f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default, annotation=f.type
        )
        for f in fields
    ] + [
        inspect.Parameter(
            name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=value, annotation=type(value)
        )
        for name, value in extras.items()
    ]
    monitor.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    docs = [f"    {f.name}: {f.description} (config: {f.dotted})" for f in fields]
    docs += [f"    {name}: {text}" for name, text in _EXTRA_DOCS.items()]
    monitor.__doc__ = "\n".join([DESCRIPTION, "", "Args:", *docs])
    monitor.__name__ = monitor.__qualname__ = PIPELINE_NAME
    return dsl.pipeline(
        name=PIPELINE_NAME, description=DESCRIPTION, display_name="pairflow monitor"
    )(monitor)
