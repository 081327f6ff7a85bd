"""Start the triggered ``retrain`` run: through the KFP API, or locally through kfp.local.

The run gets the same parameters ``pairflow submit`` would send for the config, with
``data.source`` set to the window's snapshot manifest (and ``data.format=parquet``;
``data.ground_truth`` cleared: the generator's defect table does not describe logged rows).

Which ``retrain`` version runs, on KFP:

- ``package`` given (a checkout: ``pipelines/compiled/retrain.yaml``): uploaded or reused as
  ``version``, exactly as ``pairflow submit`` does;
- else ``version`` given: that existing version of ``kubeflow.pipeline_name``;
- else: the version the recurring run ``kubeflow.schedule_name`` is pinned to (what the
  release workflow and ``promote-pipeline`` keep current), so a monitor running in the
  cluster retrains with the code the schedule runs.

The run's display name carries the window key (``retrain monitor <key>``). Before creating it
the experiment is searched for a run of that name: a rerun after a crash between submission
and the MLflow record finds the first run instead of starting a second one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from pairflow.config import PairflowConfig, param_values_from_config
from pairflow.kubeflow import client as kfp_ops
from pairflow.kubeflow.errors import KubeflowError
from pairflow.kubeflow.publish import Endpoint
from pairflow.kubeflow.version import CompiledPackage

DATA_SOURCE_PARAM = "data_source"


@dataclass(frozen=True)
class KfpTarget:
    """Where a triggered run goes on a KFP endpoint (see the module docstring)."""

    endpoint: Endpoint
    package: CompiledPackage | None = None
    version: str = ""
    experiment: str = ""  # default: kubeflow.experiment
    wait: bool = False
    timeout_s: float = 6 * 3600
    poll_s: float = 10.0


@dataclass(frozen=True)
class Submitted:
    """A started retrain run."""

    backend: Literal["kfp", "local"]
    run_id: str
    run_name: str
    pipeline_version: str  # version name (kfp) / "local" (kfp.local)
    pipeline_version_id: str
    data_source: str
    reused: bool = False  # kfp: a run of this name already existed; none was created
    state: str = ""  # the end state where it was followed (local, --wait), else ""
    params: dict[str, Any] | None = None


def run_name_for(cfg: PairflowConfig, window_key: str) -> str:
    return f"{cfg.kubeflow.pipeline_name} monitor {window_key}"


def retrain_config(cfg: PairflowConfig, data_source: str) -> PairflowConfig:
    """``cfg`` for the triggered run: the snapshot as its data."""
    out = cfg.model_copy(deep=True)
    out.data.source = data_source
    out.data.format = "parquet"
    out.data.ground_truth = ""
    return out


def _version(client: Any, cfg: PairflowConfig, target: KfpTarget, ns: str, exp: str) -> Any:
    kf = cfg.kubeflow
    if target.package is not None:
        if not target.version:
            raise KubeflowError("monitor: a retrain package needs a version name")
        ref = kfp_ops.ensure_version(client, target.package, kf.pipeline_name, target.version, ns)
        return ref, target.package
    if target.version:
        ref, spec = kfp_ops.lookup_version(client, kf.pipeline_name, target.version, ns)
    else:
        pinned = kfp_ops.recurring_run_version(client, exp, kf.schedule_name)
        if pinned is None:
            raise KubeflowError(
                f"monitor: no retrain version given and no recurring run {kf.schedule_name!r} "
                f"in experiment {target.experiment or kf.experiment!r} to take it from "
                "(pass the retrain version, or `pairflow schedule` the retrain pipeline)"
            )
        pipeline_id, version_id = pinned
        held = client.get_pipeline_version(pipeline_id, version_id)
        spec = dict(held.pipeline_spec or {})
        ref = kfp_ops.VersionRef(pipeline_id, version_id, str(held.display_name), False)
    package = CompiledPackage.from_server_spec(spec, f"{kf.pipeline_name} version {ref.name}")
    return ref, package


def submit_kfp(
    cfg: PairflowConfig,
    target: KfpTarget,
    data_source: str,
    window_key: str,
    on_state: Callable[[str], None] | None = None,
) -> Submitted:
    """Create the triggered run on KFP (or find the one an earlier attempt created)."""
    kf = cfg.kubeflow
    run_cfg = retrain_config(cfg, data_source)
    client, ns = target.endpoint.connect(cfg)
    name = run_name_for(cfg, window_key)
    with kfp_ops.api_errors(target.endpoint.host):
        exp = kfp_ops.experiment_id(client, target.experiment or kf.experiment, ns)
        ref, package = _version(client, cfg, target, ns, exp)
        if DATA_SOURCE_PARAM not in package.param_types:
            raise KubeflowError(
                f"{kf.pipeline_name} version {ref.name}: no {DATA_SOURCE_PARAM} parameter; "
                "the triggered run could not be pointed at the logged window"
            )
        params = package.coerce(param_values_from_config(run_cfg))
        earlier = kfp_ops.runs_named(client, exp, name)
        reused = bool(earlier)
        run_id = earlier[0] if earlier else ""
        if not reused:
            run_id = kfp_ops.create_run(client, ref, exp, name, params, kf.service_account)
        state_text = ""
        if target.wait:
            ended = kfp_ops.wait_for_run(client, run_id, target.timeout_s, target.poll_s, on_state)
            state_text = ended.state
    return Submitted(
        "kfp", run_id, name, ref.name, ref.version_id, data_source, reused, state_text, params
    )


def run_local(
    cfg: PairflowConfig,
    data_source: str,
    window_key: str,
    runner: Callable[[PairflowConfig], Any],
) -> tuple[Submitted, Any]:
    """Run the retrain pipeline through kfp.local on the snapshot (``runner`` is
    :func:`pairflow.local_run.run_pipeline_locally` with the caller's progress display)."""
    run_cfg = retrain_config(cfg, data_source)
    result = runner(run_cfg)
    run_dir = getattr(result, "run_dir", None)
    run_id = run_dir.name if run_dir is not None else ""
    state = "SUCCEEDED" if result.succeeded else "FAILED"
    name = run_name_for(cfg, window_key)
    return Submitted("local", run_id, name, "local", "", data_source, False, state), result
