"""A fake KFP REST API (v2beta1) for tests: ``kfp_server`` starts one on 127.0.0.1.

No KFP API server can run here, so :class:`FakeKfp` is an HTTP server on 127.0.0.1 that
implements the v2beta1 endpoints ``kfp.Client`` 2.17 calls (healthz, pipelines,
pipelines/upload, pipelines/upload_version, pipeline versions, experiments, runs,
recurringruns) with in-memory state, and checks every request: the bearer token, that
referenced pipelines/versions/experiments exist, that run parameters are parameters of the
uploaded spec with the declared types, and that recurring runs carry a 6-field cron. Anything
it rejects is recorded in ``violations``. The real ``kfp.Client`` and the real CLI run
unchanged against it.

Routes and fields were checked against kubeflow/pipelines ``backend/api/v2beta1/``:
``pipeline.proto`` (ListPipelines ``namespace`` query, Pipeline.namespace; ListPipelineVersions
and GetPipelineVersion take only the pipeline id), ``experiment.proto`` (Experiment.namespace,
ListExperiments ``namespace``), ``run.proto`` / ``recurring_run.proto`` (List by
``experiment_id`` or ``namespace``), ``healthz.proto`` (``multi_user``), and
``backend/src/apiserver/server/pipeline_upload_server.go`` (upload query parameters ``name``,
``namespace``; upload_version ``pipelineid``, ``name``). With ``multi_user=True`` it behaves as
a multi-user server: pipelines belong to the namespace given at upload and are listed per
namespace (an empty namespace lists only shared ones), and experiments cannot be listed or
created without one. A version's ``pipeline_spec`` comes back as the server builds it from a
multi-document YAML: ``{"pipeline_spec": ..., "platform_spec": ...}``
(``backend/src/apiserver/server/api_util.go``, ``yamlStringToPipelineSpecStruct``).
``requests`` records every call's method, path and query for assertions.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import yaml

from tests.local_http import BackgroundHTTPServer

_PY_TYPES: dict[str, tuple[type, ...]] = {
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
    "STRING": (str,),
}


class _Reject(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class FakeKfp:
    """In-memory KFP v2beta1 API; ``final_state`` is what every run ends in."""

    token: str
    final_state: str = "SUCCEEDED"
    multi_user: bool = False
    pipelines: dict[str, dict[str, Any]] = field(default_factory=dict)
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    experiments: dict[str, dict[str, Any]] = field(default_factory=dict)
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)
    recurring: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[tuple[str, str, dict[str, list[str]]]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    url: str = ""

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _new_id() -> str:
        return str(uuid.uuid4())

    @staticmethod
    def _filtered(items: list[dict[str, Any]], query: dict[str, list[str]]) -> list[dict[str, Any]]:
        raw = query.get("filter", [""])[0]
        if not raw:
            return items
        for pred in json.loads(raw)["predicates"]:
            if pred["operation"] not in ("EQUALS", 1) or pred["key"] != "display_name":
                raise _Reject(400, f"unsupported filter {pred}")
            items = [i for i in items if i["display_name"] == pred["stringValue"]]
        return items

    def _version_ref(self, body: dict[str, Any]) -> dict[str, Any]:
        ref = body.get("pipeline_version_reference") or {}
        version = self.versions.get(ref.get("pipeline_version_id", ""))
        if version is None or version["pipeline_id"] != ref.get("pipeline_id"):
            raise _Reject(404, f"pipeline version reference {ref} not found")
        if body.get("pipeline_spec"):
            raise _Reject(400, "expected a pinned version, not an inline pipeline_spec")
        return version

    def _check_params(self, version: dict[str, Any], body: dict[str, Any]) -> None:
        spec = version["pipeline_spec"]
        declared = spec.get("pipeline_spec", spec)["root"]["inputDefinitions"]["parameters"]
        params = (body.get("runtime_config") or {}).get("parameters") or {}
        for key, value in params.items():
            if key not in declared:
                raise _Reject(400, f"parameter {key} is not declared by the pipeline")
            kind = declared[key]["parameterType"]
            ok = isinstance(value, _PY_TYPES[kind])
            if not ok or (kind != "BOOLEAN" and isinstance(value, bool)):
                raise _Reject(400, f"parameter {key}={value!r} is not {kind}")

    def _experiment(self, body: dict[str, Any]) -> None:
        if body.get("experiment_id") not in self.experiments:
            raise _Reject(404, f"experiment {body.get('experiment_id')} not found")

    def _upload(self, handler: BaseHTTPRequestHandler, body: bytes) -> dict[str, Any]:
        ctype = handler.headers.get("Content-Type", "")
        if not ctype.startswith("multipart/form-data"):
            raise _Reject(400, "upload must be multipart/form-data")
        msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + body
        )
        parts = [p for p in msg.iter_parts() if p.get_param("name", header="content-disposition")]
        files = {p.get_param("name", header="content-disposition"): p for p in parts}
        if "uploadfile" not in files:
            raise _Reject(400, "no uploadfile part")
        payload = files["uploadfile"].get_payload(decode=True)
        assert isinstance(payload, bytes)
        docs = [d for d in yaml.safe_load_all(payload.decode()) if d is not None]
        platform = [
            d for d in docs if isinstance(d, dict) and "kubernetes" in d.get("platforms", {})
        ]
        specs = [d for d in docs if d not in platform]
        if len(specs) != 1 or not isinstance(specs[0], dict) or "root" not in specs[0]:
            raise _Reject(400, "uploadfile is not a pipeline spec")
        spec = (
            specs[0] if not platform else {"pipeline_spec": specs[0], "platform_spec": platform[0]}
        )
        # The server stores specs as protobuf Structs: numbers come back as doubles.
        as_struct: dict[str, Any] = json.loads(json.dumps(spec), parse_int=float)
        return as_struct

    def _add_version(self, pipeline_id: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        if any(
            v["display_name"] == name and v["pipeline_id"] == pipeline_id
            for v in self.versions.values()
        ):
            raise _Reject(409, f"version {name} already exists")
        version: dict[str, Any] = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": self._new_id(),
            "display_name": name,
            "pipeline_spec": spec,
        }
        self.versions[version["pipeline_version_id"]] = version
        return version

    # -- dispatch -----------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, h: Any
    ) -> Any:
        p = path.removeprefix("/apis/v2beta1")
        parts = [s for s in p.split("/") if s]
        is_json = method == "POST" and body and not p.startswith("/pipelines/upload")
        data: dict[str, Any] = json.loads(body) if is_json else {}
        ns = query.get("namespace", [""])[0] if self.multi_user else ""
        if (method, p) == ("GET", "/healthz"):
            return {"multi_user": self.multi_user}
        if (method, p) == ("GET", "/pipelines"):
            mine = [pl for pl in self.pipelines.values() if pl["namespace"] == ns]
            return {"pipelines": self._filtered(mine, query)}
        if (method, p) == ("POST", "/pipelines/upload"):
            name = query["name"][0]
            spec = self._upload(h, body)
            if any(pl["display_name"] == name and pl["namespace"] == ns
                   for pl in self.pipelines.values()):  # fmt: skip
                raise _Reject(409, f"pipeline {name} already exists in namespace {ns!r}")
            pipeline = {"pipeline_id": self._new_id(), "display_name": name, "namespace": ns}
            self.pipelines[pipeline["pipeline_id"]] = pipeline
            self._add_version(pipeline["pipeline_id"], name, spec)  # KFP's default version
            return pipeline
        if (method, p) == ("POST", "/pipelines/upload_version"):
            pid = query.get("pipelineid", [""])[0]
            if pid not in self.pipelines:
                raise _Reject(404, f"pipeline {pid} not found")
            return self._add_version(pid, query["name"][0], self._upload(h, body))
        if (
            method == "GET"
            and len(parts) == 3
            and parts[0] == "pipelines"
            and parts[2] == "versions"
        ):
            mine = [v for v in self.versions.values() if v["pipeline_id"] == parts[1]]
            listed = [{k: v for k, v in x.items() if k != "pipeline_spec"} for x in mine]
            return {"pipeline_versions": self._filtered(listed, query)}
        if method == "GET" and len(parts) == 4 and parts[2] == "versions":
            if parts[3] not in self.versions:
                raise _Reject(404, f"version {parts[3]} not found")
            return self.versions[parts[3]]
        if (method, p) == ("GET", "/experiments"):
            if self.multi_user and not ns:
                raise _Reject(400, "multi-user mode: ListExperiments requires a namespace")
            mine = [e for e in self.experiments.values() if e["namespace"] == ns]
            return {"experiments": self._filtered(mine, query)}
        if (method, p) == ("POST", "/experiments"):
            exp_ns = str(data.get("namespace") or "") if self.multi_user else ""
            if self.multi_user and not exp_ns:
                raise _Reject(400, "multi-user mode: an experiment needs a namespace")
            exp = {"experiment_id": self._new_id(), "display_name": data["display_name"],
                   "namespace": exp_ns}  # fmt: skip
            self.experiments[exp["experiment_id"]] = exp
            return exp
        if (method, p) == ("POST", "/runs"):
            self._experiment(data)
            version = self._version_ref(data)
            self._check_params(version, data)
            run = {**data, "run_id": self._new_id(), "state": "PENDING", "polls": 0}
            self.runs[run["run_id"]] = run
            return {k: v for k, v in run.items() if k != "polls"}
        if (method, p) == ("GET", "/runs"):
            exp_id = query.get("experiment_id", [""])[0]
            runs = [r for r in self.runs.values() if r["experiment_id"] == exp_id]
            return {"runs": [{k: v for k, v in r.items() if k != "polls"} for r in runs]}
        if method == "GET" and len(parts) == 2 and parts[0] == "runs":
            run = self.runs[parts[1]]
            run["polls"] += 1
            run["state"] = "RUNNING" if run["polls"] < 3 else self.final_state
            out = {k: v for k, v in run.items() if k != "polls"}
            if run["state"] == "FAILED":
                tasks = [{"display_name": "train", "state": "FAILED"}]
                out["run_details"] = {"task_details": tasks}
            return out
        if (method, p) == ("POST", "/recurringruns"):
            self._experiment(data)
            version = self._version_ref(data)
            self._check_params(version, data)
            cron = ((data.get("trigger") or {}).get("cron_schedule") or {}).get("cron", "")
            if len(cron.split()) != 6:
                raise _Reject(400, f"cron {cron!r} must have 6 fields")
            if data.get("mode") != "ENABLE":
                raise _Reject(400, "recurring run must be enabled")
            rr = {**data, "recurring_run_id": self._new_id()}
            self.recurring[rr["recurring_run_id"]] = rr
            return rr
        if (method, p) == ("GET", "/recurringruns"):
            exp_id = query.get("experiment_id", [""])[0]
            mine = [r for r in self.recurring.values() if r["experiment_id"] == exp_id]
            return {"recurringRuns": self._filtered(mine, query)}  # json_name in the proto
        if method == "DELETE" and len(parts) == 2 and parts[0] == "recurringruns":
            if self.recurring.pop(parts[1], None) is None:
                raise _Reject(404, f"recurring run {parts[1]} not found")
            return {}
        raise _Reject(404, f"fake KFP: no endpoint {method} {path}")


def _handler(fake: FakeKfp) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self, method: str) -> None:
            url = urlparse(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fake.requests.append((method, url.path, parse_qs(url.query)))
            try:
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    raise _Reject(401, "missing or wrong bearer token")
                out = fake.handle(method, url.path, parse_qs(url.query), body, self)
                status, payload = 200, json.dumps(out).encode()
            except (_Reject, KeyError, ValueError, TypeError, AttributeError) as exc:
                fake.violations.append(f"{method} {url.path}: {exc!r}")
                status = exc.status if isinstance(exc, _Reject) else 500
                payload = json.dumps({"error": str(exc), "message": str(exc)}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def do_DELETE(self) -> None:
            self._serve("DELETE")

        def log_message(self, *args: Any) -> None:
            del args

    return Handler


@pytest.fixture
def kfp_server() -> Iterator[Any]:
    """A factory of fake KFP APIs on 127.0.0.1 (each with its own token), all stopped after."""
    servers: list[BackgroundHTTPServer] = []

    def start(token: str) -> FakeKfp:
        fake = FakeKfp(token=token)
        server = BackgroundHTTPServer(_handler(fake))
        servers.append(server)
        fake.url = server.url
        return fake

    yield start
    for server in servers:
        server.close()
