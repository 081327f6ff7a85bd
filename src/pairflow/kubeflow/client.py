"""Pipeline versions, runs and recurring runs on a KFP endpoint through ``kfp.Client``.

Every function takes a connected client (see :mod:`pairflow.kubeflow.auth`), so the same code
drives a real KFP API and the fake one in the tests.

Multi-user KFP: pipelines and experiments live in a profile namespace, so every call whose
v2beta1 request has a ``namespace`` field gets ``kubeflow.namespace`` (ListPipelines,
pipelines/upload, ListExperiments/CreateExperiment). Versions, runs and recurring runs are
reached through a pipeline or experiment id, which the server resolves to its namespace
(kubeflow/pipelines backend/api/v2beta1/pipeline.proto, run.proto, recurring_run.proto).
``kfp.Client.get_pipeline_id`` sends no namespace (it finds only shared pipelines), so it is
not used.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kfp_server_api.exceptions import ApiException  # type: ignore[import-untyped]

from pairflow.kubeflow.errors import KubeflowError, PackageError
from pairflow.kubeflow.version import CompiledPackage, spec_digest

TERMINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "SKIPPED", "CANCELED"})
_CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?#LW-]+$")


@dataclass(frozen=True)
class VersionRef:
    pipeline_id: str
    version_id: str
    name: str
    created: bool


@dataclass(frozen=True)
class RunResult:
    run_id: str
    state: str
    failed_tasks: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.state == "SUCCEEDED"


@dataclass(frozen=True)
class ScheduleResult:
    action: str  # created | updated | unchanged
    recurring_run_id: str
    replaced: list[str]


@contextmanager
def api_errors(host: str) -> Iterator[None]:
    """Turn KFP API and connection failures into one-line :class:`KubeflowError` s."""

    try:
        yield
    except ApiException as exc:
        detail = _api_message(exc)
        raise KubeflowError(f"{host}: KFP API error {exc.status} {exc.reason}: {detail}") from exc
    except urllib3.exceptions.HTTPError as exc:
        raise KubeflowError(f"{host}: KFP API not reachable ({exc})") from exc


def _api_message(exc: Any) -> str:
    body = getattr(exc, "body", None) or ""
    try:
        data = json.loads(body)
    except (TypeError, ValueError):
        return str(body)[:300]
    if isinstance(data, dict):
        return str(data.get("message") or data.get("error") or data)[:300]
    return str(data)[:300]


def _eq_filter(value: str) -> str:
    return json.dumps(
        {"predicates": [{"operation": "EQUALS", "key": "display_name", "stringValue": value}]}
    )


def normalise_cron(expr: str) -> str:
    """KFP cron has 6 fields (seconds first); a 5-field expression gets ``0`` seconds."""
    fields = expr.split()
    if len(fields) == 5:
        fields = ["0", *fields]
    if len(fields) != 6 or not all(_CRON_FIELD.match(f) for f in fields):
        raise KubeflowError(
            f"--cron {expr!r}: expected 5 or 6 cron fields (KFP: seconds minutes hours "
            "day-of-month month day-of-week), e.g. '0 0 3 * * *'"
        )
    return " ".join(fields)


# ---------------------------------------------------------------------------------------------
# pipelines and versions


def find_pipeline(client: Any, name: str, namespace: str = "") -> str | None:
    """Id of pipeline ``name`` in ``namespace`` (shared pipelines when empty)."""
    resp = client.list_pipelines(page_size=10, filter=_eq_filter(name), namespace=namespace or None)
    found = [p for p in (resp.pipelines or []) if p.display_name == name]
    if len(found) > 1:
        raise KubeflowError(f"{len(found)} pipelines named {name!r} in namespace {namespace!r}")
    return str(found[0].pipeline_id) if found else None


def find_version(client: Any, pipeline_id: str, name: str) -> Any | None:
    resp = client.list_pipeline_versions(pipeline_id, page_size=10, filter=_eq_filter(name))
    versions = [v for v in (resp.pipeline_versions or []) if v.display_name == name]
    return versions[0] if versions else None


def ensure_version(
    client: Any, package: CompiledPackage, pipeline: str, version: str, namespace: str = ""
) -> VersionRef:
    """Upload ``package`` as version ``version`` of ``pipeline`` (creating the pipeline).

    A version of that name already holding the same spec is reused (reruns are idempotent);
    one holding a different spec is an error: a name always means one package.
    """
    pipeline_id = find_pipeline(client, pipeline, namespace)
    if pipeline_id is None:
        created = client.upload_pipeline(
            str(package.path),
            pipeline_name=pipeline,
            description=f"pairflow {pipeline} pipeline",
            namespace=namespace or None,
        )
        pipeline_id = str(created.pipeline_id)
    existing = find_version(client, pipeline_id, version)
    if existing is not None:
        held = client.get_pipeline_version(pipeline_id, existing.pipeline_version_id)
        if spec_digest(dict(held.pipeline_spec or {})) != package.digest:
            raise PackageError(
                f"pipeline {pipeline!r} version {version!r} already exists with a different "
                f"spec than {package.path}; use another --version"
            )
        return VersionRef(pipeline_id, str(existing.pipeline_version_id), version, False)
    uploaded = client.upload_pipeline_version(
        str(package.path),
        pipeline_version_name=version,
        pipeline_id=pipeline_id,
        description=f"{package.name} {version} (spec sha256 {package.digest[:12]})",
    )
    return VersionRef(pipeline_id, str(uploaded.pipeline_version_id), version, True)


def lookup_version(
    client: Any, pipeline: str, version: str, namespace: str = ""
) -> tuple[VersionRef, dict[str, Any]]:
    """An existing version and its spec; an error naming what is missing."""
    pipeline_id = find_pipeline(client, pipeline, namespace)
    if pipeline_id is None:
        where = f" in namespace {namespace!r}" if namespace else ""
        raise KubeflowError(f"pipeline {pipeline!r} does not exist on the source endpoint{where}")
    found = find_version(client, pipeline_id, version)
    if found is None:
        raise KubeflowError(f"pipeline {pipeline!r} has no version {version!r}")
    held = client.get_pipeline_version(pipeline_id, found.pipeline_version_id)
    ref = VersionRef(pipeline_id, str(found.pipeline_version_id), version, False)
    return ref, dict(held.pipeline_spec or {})


# ---------------------------------------------------------------------------------------------
# runs


def experiment_id(client: Any, name: str, namespace: str = "") -> str:
    exp = client.create_experiment(name, namespace=namespace or None)  # get-or-create
    return str(exp.experiment_id)


def create_run(
    client: Any,
    ref: VersionRef,
    experiment: str,
    run_name: str,
    params: dict[str, Any],
    service_account: str,
) -> str:
    run = client.run_pipeline(
        experiment_id=experiment,
        job_name=run_name,
        params=params,
        pipeline_id=ref.pipeline_id,
        version_id=ref.version_id,
        service_account=service_account or None,
    )
    return str(run.run_id)


def runs_named(client: Any, experiment: str, name: str) -> list[str]:
    """Ids of the runs displayed as ``name`` in ``experiment`` (newest first).

    The ``display_name`` filter is sent (ListRuns takes one, run.proto) and the names are
    checked again here, so a server that ignores the filter cannot mislead the caller."""
    token, found = "", []
    while True:
        resp = client.list_runs(
            page_token=token,
            page_size=100,
            sort_by="created_at desc",
            experiment_id=experiment,
            filter=_eq_filter(name),
        )
        found += [str(r.run_id) for r in resp.runs or [] if r.display_name == name]
        token = resp.next_page_token or ""
        if not token:
            return found


def wait_for_run(
    client: Any,
    run_id: str,
    timeout_s: float,
    poll_s: float = 10.0,
    on_state: Callable[[str], None] | None = None,
) -> RunResult:
    """Poll the run until a terminal state; ``TimeoutError``-free: a timeout is an error."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while True:
        run = client.get_run(run_id)
        state = str(run.state or "PENDING")
        if state != last and on_state is not None:
            on_state(state)
        last = state
        if state in TERMINAL_STATES:
            return RunResult(run_id, state, _failed_tasks(run))
        if time.monotonic() > deadline:
            raise KubeflowError(f"run {run_id}: still {state} after {timeout_s:.0f} s (--timeout)")
        time.sleep(poll_s)


def _failed_tasks(run: Any) -> list[str]:
    details = getattr(run, "run_details", None)
    tasks = getattr(details, "task_details", None) or []
    return [str(t.display_name) for t in tasks if str(getattr(t, "state", "")) == "FAILED"]


def succeeded_run_of(client: Any, experiment: str, version_id: str) -> str | None:
    """The newest SUCCEEDED run of ``version_id`` in ``experiment`` (None if there is none)."""
    token = ""
    while True:
        resp = client.list_runs(
            page_token=token, page_size=100, sort_by="created_at desc", experiment_id=experiment
        )
        for run in resp.runs or []:
            ref = run.pipeline_version_reference
            pinned = ref is not None and ref.pipeline_version_id == version_id
            if pinned and run.state == "SUCCEEDED":
                return str(run.run_id)
        token = resp.next_page_token or ""
        if not token:
            return None


# ---------------------------------------------------------------------------------------------
# recurring runs


def _recurring_runs(client: Any, experiment: str, name: str) -> list[Any]:
    resp = client.list_recurring_runs(
        experiment_id=experiment, page_size=100, filter=_eq_filter(name)
    )
    return [r for r in (resp.recurring_runs or []) if r.display_name == name]


def recurring_run_version(client: Any, experiment: str, name: str) -> tuple[str, str] | None:
    """(pipeline id, version id) the recurring run ``name`` is pinned to; None if absent."""
    current = _recurring_runs(client, experiment, name)
    if len(current) > 1:
        raise KubeflowError(f"{len(current)} recurring runs named {name!r}: expected one")
    if not current or current[0].pipeline_version_reference is None:
        return None
    ref = current[0].pipeline_version_reference
    return str(ref.pipeline_id), str(ref.pipeline_version_id)


def _same_schedule(rr: Any, ref: VersionRef, cron: str, params: dict[str, Any]) -> bool:
    pinned = rr.pipeline_version_reference
    trigger = rr.trigger.cron_schedule if rr.trigger is not None else None
    held = (rr.runtime_config.parameters if rr.runtime_config is not None else None) or {}
    return (
        pinned is not None
        and pinned.pipeline_version_id == ref.version_id
        and trigger is not None
        and trigger.cron == cron
        and json.dumps(held, sort_keys=True) == json.dumps(params, sort_keys=True)
        and str(rr.mode) == "ENABLE"
    )


def upsert_recurring_run(
    client: Any,
    ref: VersionRef,
    experiment: str,
    name: str,
    cron: str,
    params: dict[str, Any],
    service_account: str,
) -> ScheduleResult:
    """Create or repoint the recurring run ``name`` so it runs ``ref`` on ``cron``.

    KFP has no update call for recurring runs: a changed one is replaced by a new one pinned to
    the version, created first and the old one deleted after, so a schedule always exists.
    """
    cron = normalise_cron(cron)
    current = _recurring_runs(client, experiment, name)
    if len(current) == 1 and _same_schedule(current[0], ref, cron, params):
        return ScheduleResult("unchanged", str(current[0].recurring_run_id), [])
    created = client.create_recurring_run(
        experiment_id=experiment,
        job_name=name,
        description=f"pairflow: pipeline version {ref.name}",
        cron_expression=cron,
        max_concurrency=1,
        no_catchup=True,
        params=params,
        pipeline_id=ref.pipeline_id,
        version_id=ref.version_id,
        enabled=True,
        service_account=service_account or None,
    )
    replaced = [str(r.recurring_run_id) for r in current]
    for rid in replaced:
        client.delete_recurring_run(rid)
    return ScheduleResult(
        "updated" if replaced else "created", str(created.recurring_run_id), replaced
    )
