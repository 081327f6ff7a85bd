"""The candidate revision's container, run locally: it serves exactly the pinned version.

The kserve backend's start patch is applied to the InferenceService the real kustomize renders
(prod overlay) and validated against the KServe v0.20 CRD. The patched predictor container is
then started the way the kubelet would start it from the serving image: the image's entrypoint
(``images/serving/Dockerfile``: ``pairflow serve``) with the container's ``args``, ``$(VAR)``
references expanded from its ``env``. Two substitutions stand in for the cluster: the
``MLFLOW_TRACKING_URI`` value (the in-cluster Service ``http://mlflow:5000``) points at the
test's real MLflow server, and ``--port 8080`` becomes a free port, since tests share this
machine. The server binds ``0.0.0.0`` as in the pod; the test reaches it on 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import jsonpatch
import pandas as pd
import pytest
from tests.fixtures_mlflow import register_gated_versions
from tests.manifests_render import find_object, render_overlay, validate_object

from pairflow.config import SplitConfig
from pairflow.demo.synthetic import GenerateSummary
from pairflow.kubeflow import names
from pairflow.stages.deploy.kserve import start_patch

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _expand(arg: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion in args (undefined references stay as written)."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), arg)


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "pairflow serve exited"
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("pairflow serve did not become ready")


def test_patched_container_serves_the_candidate_version(
    mlflow_server: str, small_dataset: GenerateSummary, tmp_path: Path
) -> None:
    from pairflow.models.scratch import save_untrained_clip
    from pairflow.stages.deploy.replay import holdout_pairs, pair_request

    captions = [str(c) for c in pd.read_parquet(small_dataset.manifest)["caption"]]
    clip = save_untrained_clip(tmp_path / "clip", captions, seed=3)

    def logger(client: Any, run_id: str) -> None:
        client.log_artifacts(run_id, str(clip), "model")

    stable, candidate = register_gated_versions(mlflow_server, "isvc", [logger, logger])
    isvc = find_object(render_overlay("prod"), "InferenceService", names.INFERENCE_SERVICE)
    patched = jsonpatch.apply_patch(isvc, start_patch(isvc, candidate))
    validate_object(patched)
    (container,) = patched["spec"]["predictor"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    assert env["MODEL_URI"] == candidate and "@" not in candidate
    env["MLFLOW_TRACKING_URI"] = mlflow_server  # the cluster's http://mlflow:5000
    args = [_expand(a, env) for a in container["args"]]
    port = _free_port()
    args[args.index("--port") + 1] = str(port)
    assert args[args.index("--host") + 1] == "0.0.0.0"
    entrypoint = [sys.executable, "-m", "pairflow.cli", "serve"]  # the image's `pairflow serve`
    with (tmp_path / "serve.log").open("wb") as log:
        proc = subprocess.Popen(
            [*entrypoint, *args],
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMP_NUM_THREADS": "1",
                 "PAIRFLOW_CACHE": str(tmp_path / "cache"), **env},
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(url, proc)
        version = candidate.rsplit("/", 1)[1]
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
            text = resp.read().decode()
        info = [ln for ln in text.splitlines() if ln.startswith("pairflow_predictor_info{")]
        assert info and all(f'model_version="{version}"' in ln for ln in info), info
        split = SplitConfig(holdout_fraction=0.3)
        (row,) = holdout_pairs(str(small_dataset.manifest), split, 32)[:1]
        req = urllib.request.Request(
            f"{url}/v1/models/pairflow:predict",
            data=json.dumps(pair_request(row)).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.loads(resp.read())
        assert answer["model_version"] == version != stable.rsplit("/", 1)[1]
        assert answer["predictions"]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
