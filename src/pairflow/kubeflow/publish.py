"""The three cluster flows: submit a run, schedule a recurring run, promote between endpoints."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pairflow.config import PairflowConfig, param_values_from_config, parse_set, pipeline_params
from pairflow.errors import ConfigError
from pairflow.kubeflow import client as kfp_ops
from pairflow.kubeflow.auth import connect
from pairflow.kubeflow.errors import KubeflowError, PackageError
from pairflow.kubeflow.version import CompiledPackage, spec_digest


@dataclass(frozen=True)
class Endpoint:
    """A KFP endpoint and how to authenticate to it."""

    host: str
    token_env: str

    def connect(self, cfg: PairflowConfig) -> tuple[Any, str]:
        """A client and the namespace every namespaced call gets (see :func:`namespace_of`)."""
        kf = cfg.kubeflow
        with kfp_ops.api_errors(self.host):
            client = connect(self.host, kf.auth, self.token_env, kf.namespace)
            return client, namespace_of(client, kf.namespace, self.host)


def namespace_of(client: Any, configured: str, host: str) -> str:
    """``kubeflow.namespace``, else the one ``kfp.Client`` read in a pod; a multi-user KFP
    with neither is an error before anything is uploaded (it would create shared pipelines)."""
    ns = configured or str(client.get_user_namespace() or "")
    if not ns and client.get_kfp_healthz().multi_user is True:
        raise KubeflowError(
            f"{host}: multi-user KFP: set the profile namespace (--namespace or kubeflow.namespace)"
        )
    return ns


@dataclass(frozen=True)
class SubmitResult:
    version: kfp_ops.VersionRef
    run_id: str
    run: kfp_ops.RunResult | None


@dataclass(frozen=True)
class PromoteResult:
    source: kfp_ops.VersionRef
    target: kfp_ops.VersionRef
    source_run: str | None
    schedule: kfp_ops.ScheduleResult


def run_parameters(
    cfg: PairflowConfig, sets: Iterable[str], package: CompiledPackage
) -> dict[str, Any]:
    """Pipeline arguments from ``cfg``; every ``--set`` must name a parameter of the package."""
    by_path = {p.path: p for p in pipeline_params()}
    for expr in sets:
        path, _ = parse_set(expr)
        param = by_path.get(tuple(path))
        key = ".".join(path)
        if param is None:
            raise ConfigError(
                f"--set {key}: not a pipeline parameter (see `pairflow config params`); other "
                "config values are compiled into the package: recompile to change them"
            )
        if param.name not in package.param_types:
            raise PackageError(
                f"--set {key}: {package.path} has no parameter {param.name}; it is stale "
                "(run `make compile`)"
            )
    return package.coerce(param_values_from_config(cfg))


def submit(
    cfg: PairflowConfig,
    endpoint: Endpoint,
    package: CompiledPackage,
    params: dict[str, Any],
    version: str,
    *,
    experiment: str,
    run_name: str = "",
    wait: bool = False,
    timeout_s: float = 6 * 3600,
    poll_s: float = 10.0,
    on_state: Callable[[str], None] | None = None,
) -> SubmitResult:
    """Upload ``package`` as ``version`` and start a run of it in ``experiment``."""
    kf = cfg.kubeflow
    client, ns = endpoint.connect(cfg)
    with kfp_ops.api_errors(endpoint.host):
        ref = kfp_ops.ensure_version(client, package, kf.pipeline_name, version, ns)
        exp = kfp_ops.experiment_id(client, experiment, ns)
        name = run_name or f"{kf.pipeline_name} {version} {time.strftime('%Y-%m-%d %H:%M:%S')}"
        run_id = kfp_ops.create_run(client, ref, exp, name, params, kf.service_account)
        result = None
        if wait:
            result = kfp_ops.wait_for_run(client, run_id, timeout_s, poll_s, on_state)
    return SubmitResult(ref, run_id, result)


def schedule(
    cfg: PairflowConfig,
    endpoint: Endpoint,
    package: CompiledPackage,
    params: dict[str, Any],
    version: str,
    *,
    experiment: str,
    name: str,
    cron: str,
    pipeline: str = "",
) -> tuple[kfp_ops.VersionRef, kfp_ops.ScheduleResult]:
    """Upload ``package`` as ``version`` (if new) of ``pipeline`` (default
    ``kubeflow.pipeline_name``) and pin the recurring run ``name`` to it."""
    kf = cfg.kubeflow
    cron = kfp_ops.normalise_cron(cron)
    client, ns = endpoint.connect(cfg)
    with kfp_ops.api_errors(endpoint.host):
        ref = kfp_ops.ensure_version(client, package, pipeline or kf.pipeline_name, version, ns)
        exp = kfp_ops.experiment_id(client, experiment, ns)
        result = kfp_ops.upsert_recurring_run(
            client, ref, exp, name, cron, params, kf.service_account
        )
    return ref, result


def promote(
    cfg: PairflowConfig,
    source: Endpoint,
    target: Endpoint,
    package: CompiledPackage,
    params: dict[str, Any],
    version: str,
    *,
    source_experiment: str,
    experiment: str,
    name: str,
    cron: str,
    require_success: bool = True,
) -> PromoteResult:
    """Copy version ``version`` from ``source`` to ``target`` and repoint the recurring run.

    The version on the source must hold exactly ``package`` (what this checkout compiled), and
    with ``require_success`` it must have a SUCCEEDED run in ``source_experiment``.
    """
    kf = cfg.kubeflow
    cron = kfp_ops.normalise_cron(cron)
    src, src_ns = source.connect(cfg)
    with kfp_ops.api_errors(source.host):
        src_ref, src_spec = kfp_ops.lookup_version(src, kf.pipeline_name, version, src_ns)
        if spec_digest(src_spec) != package.digest:
            raise PackageError(
                f"{source.host}: version {version!r} does not hold {package.path} "
                "(spec digests differ); promote the commit that was submitted to the source"
            )
        src_run = None
        if require_success:
            exp = kfp_ops.experiment_id(src, source_experiment, src_ns)
            src_run = kfp_ops.succeeded_run_of(src, exp, src_ref.version_id)
            if src_run is None:
                raise KubeflowError(
                    f"{source.host}: version {version!r} has no SUCCEEDED run in experiment "
                    f"{source_experiment!r}; submit it with --wait first (or --no-require-success)"
                )
    dst, ns = target.connect(cfg)
    with kfp_ops.api_errors(target.host):
        dst_ref = kfp_ops.ensure_version(dst, package, kf.pipeline_name, version, ns)
        exp = kfp_ops.experiment_id(dst, experiment, ns)
        sched = kfp_ops.upsert_recurring_run(
            dst, dst_ref, exp, name, cron, params, kf.service_account
        )
    return PromoteResult(src_ref, dst_ref, src_run, sched)
