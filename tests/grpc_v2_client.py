"""The standard V2 gRPC client (``tritonclient.grpc``) run in its own process, as a user runs it.

Why a process of its own: ``tritonclient.grpc`` and ``kserve`` both register the Open Inference
protocol's messages (package ``inference``, e.g. ``inference.ServerLiveRequest``) in protobuf's
default descriptor pool, so the two cannot be imported into one Python process. The test suite
imports ``kserve`` (the predictor's unit tests), so the client lives here and is driven through
:func:`run_grpc_calls`: a list of calls goes in as JSON on stdin, one answer per call comes back
as JSON on stdout.

A call is ``{"op": "metadata"}`` or ``{"op": "infer", "task": T, "images_b64": [...] | null,
"captions": [...] | null}``. An answer is ``{"metadata": {...}}``, ``{"outputs": {name: list}}``
or ``{"error": {"status": "StatusCode.X", "message": "..."}}``.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from typing import Any

import numpy as np


def run_grpc_calls(url: str, model: str, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run ``calls`` against the gRPC endpoint ``url`` in a fresh process; one answer per call."""
    spec = json.dumps({"url": url, "model": model, "calls": calls})
    proc = subprocess.run(
        [sys.executable, "-m", "tests.grpc_v2_client"],
        input=spec,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"gRPC client process failed ({proc.returncode}): {proc.stderr[-2000:]}")
    answers: list[dict[str, Any]] = json.loads(proc.stdout)
    return answers


class GrpcResult:
    """The part of tritonclient's ``InferResult`` the tests use: ``as_numpy(name)``."""

    def __init__(self, outputs: dict[str, Any]) -> None:
        self._outputs = outputs

    def as_numpy(self, name: str) -> Any:
        value = self._outputs[name]
        if name == "label":
            return np.array([v.encode() for v in value], dtype=np.object_)
        return np.asarray(value, dtype=np.float32)


def _tensor(grpcclient: Any, name: str, values: list[bytes]) -> Any:
    inp = grpcclient.InferInput(name, [len(values)], "BYTES")
    inp.set_data_from_numpy(np.array(values, dtype=np.object_))
    return inp


def _call(grpcclient: Any, client: Any, model: str, call: dict[str, Any]) -> dict[str, Any]:
    from tritonclient.utils import InferenceServerException  # type: ignore[import-untyped]

    if call["op"] == "metadata":
        return {"metadata": client.get_model_metadata(model, as_json=True)}
    inputs = []
    if call.get("images_b64") is not None:
        images = [base64.b64decode(v) for v in call["images_b64"]]
        inputs.append(_tensor(grpcclient, "image", images))
    if call.get("captions") is not None:
        inputs.append(_tensor(grpcclient, "caption", [c.encode() for c in call["captions"]]))
    try:
        res = client.infer(model, inputs, parameters={"task": call["task"]})
    except InferenceServerException as exc:
        return {"error": {"status": str(exc.status()), "message": str(exc)}}
    outputs: dict[str, Any] = {}
    for out in res.get_response(as_json=True)["outputs"]:
        arr = res.as_numpy(out["name"])
        if arr.dtype == np.object_:
            outputs[out["name"]] = [v.decode() if isinstance(v, bytes) else v for v in arr]
        else:
            outputs[out["name"]] = arr.tolist()
    return {"outputs": outputs}


def main() -> None:
    import tritonclient.grpc as grpcclient  # type: ignore[import-untyped]

    spec = json.load(sys.stdin)
    client = grpcclient.InferenceServerClient(spec["url"])
    answers = [_call(grpcclient, client, spec["model"], call) for call in spec["calls"]]
    json.dump(answers, sys.stdout)


if __name__ == "__main__":
    main()
