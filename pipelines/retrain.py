"""The ``retrain`` DAG: ingest → validate → dedupe → clip-filter → train → evaluate →
[gate] → compress → register → deploy, with an ExitHandler that records the final status.

The pipeline's parameters are generated from the config model (fields marked ``ui``), so the
Kubeflow UI shows exactly what the config accepts, with titles and descriptions. Values not
exposed in the UI come from the config compiled into the pipeline (``defaults_json``).

Every task runs in ``kubeflow.base_image`` and gets its endpoints and credentials the Kubernetes
way, compiled in with kfp-kubernetes (``platform_spec``): the ConfigMap ``kubeflow.env_config_map``
and the Secrets ``kubeflow.s3_secret`` / ``kubeflow.mlflow_secret`` as env. The ServiceAccount is
not a per-task setting in KFP v2 (kfp-kubernetes has none): ``pairflow submit``/``schedule`` set
``kubeflow.service_account`` on the run.
"""

from __future__ import annotations

import inspect
from typing import Any

from kfp import dsl, kubernetes
from kfp.dsl import pipeline_context

from pairflow.components.clip_filter import clip_filter, gather_filtered
from pairflow.components.compress import compress
from pairflow.components.dedupe import dedupe
from pairflow.components.deploy import deploy
from pairflow.components.evaluate import evaluate
from pairflow.components.finalize import finalize
from pairflow.components.ingest import ingest
from pairflow.components.register import register
from pairflow.components.resolve_config import resolve_config
from pairflow.components.train import train
from pairflow.components.validate import data_contract, validate
from pairflow.config import PairflowConfig, PipelineParam, pipeline_params
from pairflow.kubeflow.settings import KubeflowConfig

PIPELINE_NAME = "retrain"
DESCRIPTION = (
    "pairflow retrain: curate image-caption pairs, retrain, evaluate against the champion, "
    "compress, register in MLflow and canary-deploy."
)


class _Retry:
    """Retry policy of I/O-bound steps, set per build from ``kubeflow.io_retries``."""

    retries = 3
    backoff_s = 15


def _io_bound(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Retry steps that talk to S3/MLflow/Kubernetes, with exponential backoff."""
    if _Retry.retries == 0:
        return task
    return task.set_retry(
        num_retries=_Retry.retries, backoff_duration=f"{_Retry.backoff_s}s", backoff_factor=2.0
    )


def _no_cache(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Steps whose result depends on state outside their inputs must never be cached."""
    return task.set_caching_options(enable_caching=False)


# Keys of the pipeline env ConfigMap and the two Secrets, each the env variable it becomes.
CONFIG_MAP_ENV = ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")
S3_SECRET_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
MLFLOW_SECRET_ENV = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def _cluster(task: dsl.PipelineTask, kf: KubeflowConfig) -> None:
    """The runtime image and the Kubernetes env every step needs on a cluster."""
    task.set_container_image(kf.base_image)
    kubernetes.use_config_map_as_env(task, kf.env_config_map, {k: k for k in CONFIG_MAP_ENV})
    kubernetes.use_secret_as_env(task, kf.s3_secret, {k: k for k in S3_SECRET_ENV})
    kubernetes.use_secret_as_env(task, kf.mlflow_secret, {k: k for k in MLFLOW_SECRET_ENV})


def _dag(defaults_json: str, p: dict[str, Any]) -> None:
    run_id, run_name = dsl.PIPELINE_JOB_ID_PLACEHOLDER, dsl.PIPELINE_JOB_NAME_PLACEHOLDER
    done = finalize(
        tracking_uri=p["mlflow_tracking_uri"],
        experiment=p["mlflow_experiment"],
        workdir=p["run_workdir"],
        kfp_run_id=run_id,
    ).set_display_name("record final status")
    _no_cache(_io_bound(done))
    with dsl.ExitHandler(done, name="retrain"):
        conf = resolve_config(
            defaults_json=defaults_json, params=p, kfp_run_id=run_id, kfp_run_name=run_name
        ).set_display_name("resolve config")
        _no_cache(_io_bound(conf))
        cfg = conf.outputs["config"]
        # The MLflow run resolve-config opened: every step that logs, logs to it by this id.
        mlflow_run = conf.outputs["mlflow_run_id"]

        # A source may change under the same URI: ingest always re-reads it.
        ing = ingest(config=cfg, mlflow_run_id=mlflow_run).set_display_name("ingest")
        _no_cache(_io_bound(ing))

        with dsl.ParallelFor(ing.outputs["Output"], name="validate-shards") as shard:
            val = validate(config=cfg, manifest=ing.outputs["kept"], shard=shard)
            val.set_display_name("validate shard")
        con = data_contract(
            config=cfg,
            shards=dsl.Collected(val.outputs["kept"]),
            shard_rejected=dsl.Collected(val.outputs["rejected"]),
            shard_reports=dsl.Collected(val.outputs["report"]),
            upstream_report=ing.outputs["report"],
            mlflow_run_id=mlflow_run,
        ).set_display_name("data contract")
        ded = dedupe(config=cfg, manifest=con.outputs["kept"], mlflow_run_id=mlflow_run)
        ded.set_display_name("dedupe")

        with dsl.ParallelFor(ing.outputs["Output"], name="filter-shards") as fshard:
            flt = clip_filter(config=cfg, manifest=ded.outputs["kept"], shard=fshard)
            flt.set_display_name("clip-filter shard")
        curated = gather_filtered(
            config=cfg,
            shards=dsl.Collected(flt.outputs["kept"]),
            shard_rejected=dsl.Collected(flt.outputs["rejected"]),
            shard_reports=dsl.Collected(flt.outputs["report"]),
            shard_embeddings=dsl.Collected(flt.outputs["embeddings"]),
            upstream_report=ded.outputs["report"],
            mlflow_run_id=mlflow_run,
        ).set_display_name("gather filtered shards")
        # Model stages output models and decisions, no manifest: each takes the curated
        # manifest from the data stage that produced it.
        manifest = curated.outputs["kept"]

        trn = train(config=cfg, manifest=manifest, mlflow_run_id=mlflow_run, kfp_run_id=run_id)
        trn.set_display_name("train")
        ev = evaluate(
            config=cfg,
            manifest=manifest,
            model=trn.outputs["model"],
            embeddings=curated.outputs["embeddings"],
            mlflow_run_id=mlflow_run,
        ).set_display_name("evaluate")
        # It reads the champion from MLflow: state outside its inputs.
        _no_cache(_io_bound(ev))

        with dsl.If(ev.outputs["Output"] == True, name="gate-passed"):  # noqa: E712
            cmp = compress(
                config=cfg, manifest=manifest, model=trn.outputs["model"], mlflow_run_id=mlflow_run
            )
            cmp.set_display_name("compress")
            reg = register(
                config=cfg,
                manifest=manifest,
                model=cmp.outputs["compressed"],
                mlflow_run_id=mlflow_run,
                kfp_run_id=run_id,
                kfp_run_name=run_name,
                trained_model=trn.outputs["model"],
                evaluate_report=ev.outputs["report"],
                ingest_report=ing.outputs["report"],
                validate_report=con.outputs["report"],
                dedupe_report=ded.outputs["report"],
                filter_report=curated.outputs["report"],
                train_report=trn.outputs["report"],
                compress_report=cmp.outputs["report"],
                data_docs=con.outputs["data_docs"],
                drift_html=ev.outputs["drift"],
                eval_plots=ev.outputs["plots"],
                drift_reference=ev.outputs["reference"],
                serving_reference=ev.outputs["serving_reference"],
            )
            _no_cache(_io_bound(reg.set_display_name("register")))
            dep = deploy(
                config=cfg,
                manifest=manifest,
                model_uri=reg.outputs["Output"],
                mlflow_run_id=mlflow_run,
                kfp_run_id=run_id,
            )
            _no_cache(_io_bound(dep.set_display_name("deploy")))


def _docstring(params: list[PipelineParam]) -> str:
    lines = [DESCRIPTION, "", "Args:"]
    for prm in params:
        text = f"{prm.title}. {prm.description} (config: {prm.dotted})".replace("\n", " ")
        lines.append(f"    {prm.name}: {text}")
    return "\n".join(lines)


def build_pipeline(base: PairflowConfig | None = None) -> Any:
    """The ``retrain`` pipeline with UI parameters defaulting to ``base`` (default config)."""
    cfg = base or PairflowConfig()
    _Retry.retries, _Retry.backoff_s = cfg.kubeflow.io_retries, cfg.kubeflow.io_retry_backoff_s
    params = pipeline_params()
    data = cfg.to_dict()
    names = [prm.name for prm in params]

    def retrain(*args: Any) -> None:
        _dag(cfg.to_json(), dict(zip(names, args, strict=True)))
        # Every task the DAG created, including those inside loops, conditions and the exit
        # handler: none can miss the image or the platform config.
        for task in pipeline_context.Pipeline.get_default_pipeline().tasks.values():
            _cluster(task, cfg.kubeflow)

    defaults = {}
    for prm in params:
        node: Any = data
        for part in prm.path:
            node = node[part]
        defaults[prm.name] = "" if node is None else node
    retrain.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [
            inspect.Parameter(
                prm.name,
                inspect.Parameter.POSITIONAL_OR_KEYWORD,
                default=defaults[prm.name],
                annotation=prm.type,
            )
            for prm in params
        ]
    )
    retrain.__doc__ = _docstring(params)
    retrain.__name__ = retrain.__qualname__ = PIPELINE_NAME
    return dsl.pipeline(
        name=PIPELINE_NAME, description=DESCRIPTION, display_name="pairflow retrain"
    )(retrain)
