"""``pairflow serve`` as a real subprocess: readiness, V1/V2, 4xx limits, metrics, SIGTERM."""

from __future__ import annotations

import base64
import contextlib
import io
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from PIL import Image

from pairflow.models.scratch import save_untrained_clip

pytestmark = pytest.mark.slow

CAPTIONS = ["a red circle", "two blue squares on the left", "a green triangle", "three stars"]
NAME = "pf"
VERSION = "it-7"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (48, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    root = tmp_path_factory.mktemp("serve")
    model = save_untrained_clip(root / "clip", CAPTIONS, seed=2)
    images = root / "images"
    images.mkdir()
    (images / "red.png").write_bytes(_png((220, 0, 0)))
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "pairflow.cli",
        "serve",
        "--model",
        str(model),
        "--port",
        str(port),
        "--name",
        NAME,
        "--version-label",
        VERSION,
        "--set",
        f"serve.allowed_image_root={images}",
        "--set",
        "serve.max_instances=4",
        "--set",
        "serve.max_image_pixels=10000",
        "--set",
        "serve.max_caption_chars=100",
        "--set",
        "serve.torch_threads=1",
    ]
    log = (root / "server.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        ready = False
        while time.monotonic() < deadline and proc.poll() is None:
            with contextlib.suppress(httpx.TransportError):
                ready = httpx.get(f"{url}/v2/models/{NAME}/ready", timeout=2).status_code == 200
            if ready:
                break
            time.sleep(0.5)
        if not ready:
            tail = (root / "server.log").read_text()[-3000:]
            raise AssertionError(f"server not ready (exit {proc.poll()}): {tail}")
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def test_serves_v1_v2_limits_metrics_and_stops_on_sigterm(
    server: tuple[str, subprocess.Popen[bytes]],
) -> None:
    url, proc = server
    client = httpx.Client(base_url=url, timeout=30)
    red = _b64(_png((220, 0, 0)))

    v1 = client.post(
        f"/v1/models/{NAME}:predict",
        json={
            "instances": [
                {"image": red, "caption": CAPTIONS[0]},
                {"image_path": "red.png", "caption": CAPTIONS[0]},
            ]
        },
    )
    assert v1.status_code == 200, v1.text
    scores = [p["score"] for p in v1.json()["predictions"]]
    assert len(scores) == 2 and abs(scores[0] - scores[1]) < 1e-5  # same image, both ways
    assert -1.0 <= scores[0] <= 1.0 and v1.json()["model_version"] == VERSION

    v2 = client.post(
        f"/v2/models/{NAME}/infer",
        json={
            "parameters": {"task": "score"},
            "inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [1], "data": [red]},
                {"name": "caption", "datatype": "BYTES", "shape": [1], "data": [CAPTIONS[0]]},
            ],
        },
    )
    assert v2.status_code == 200, v2.text
    out = v2.json()["outputs"][0]
    assert out["name"] == "score" and abs(out["data"][0] - scores[0]) < 1e-5

    bad = {
        "too many instances": {"instances": [{"image": red, "caption": "x"}] * 5},
        "limit is 10000": {
            "instances": [{"image": _b64(_png((1, 2, 3), (101, 100))), "caption": "x"}]
        },
        "101 characters": {"instances": [{"image": red, "caption": "x" * 101}]},
        "not valid base64": {"instances": [{"image": "***", "caption": "x"}]},
        "needs an image and a caption": {"instances": [{"caption": "x"}]},
        "outside the allowed image root": {
            "instances": [{"image_path": "../clip/config.json", "caption": "x"}]
        },
    }
    for message, body in bad.items():
        r = client.post(f"/v1/models/{NAME}:predict", json=body)
        assert r.status_code == 400, (message, r.text)
        if message != "too many instances":
            assert message in r.json()["error"], r.text
        else:
            assert "5 in one request, the limit is 4" in r.json()["error"]

    metrics = client.get("/metrics").text
    base = {"model_name": NAME, "model_version": VERSION}
    assert _metric(metrics, "pairflow_predictor_requests_total", protocol="v1", **base) == 7
    assert _metric(metrics, "pairflow_predictor_requests_total", protocol="v2", **base) == 1
    assert _metric(
        metrics, "pairflow_predictor_errors_total", protocol="v1", kind="client", **base
    ) == len(bad)
    assert _metric(metrics, "pairflow_predictor_latency_seconds_count", **base) == 8
    assert _metric(metrics, "pairflow_predictor_batch_size_sum", **base) == 3  # 2 + 1 pairs
    assert _metric(metrics, "pairflow_predictor_pair_score_count", **base) == 3
    assert _metric(metrics, "pairflow_predictor_info", variant="torch", **base) == 1

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
