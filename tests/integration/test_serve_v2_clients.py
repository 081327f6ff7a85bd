"""``pairflow serve`` of a registered MLflow model, driven by the real V2 clients
(``tritonclient.http`` binary and JSON, ``tritonclient.grpc``) and by hostile traffic.

One server process for the module (tests run in file order; the last one stops it):
readiness polled every 50 ms from process start, metadata, embed/score/classify equal to
``mlflow.pyfunc.load_model("models:/...").predict()``, the hostile-input matrix (each a 4xx
with a message, the server still serving), overload, a >= 60 s soak, SIGTERM under load.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import signal
import socket
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from tests.fixtures_mlflow import register_gated_versions
from tests.grpc_v2_client import GrpcResult, run_grpc_calls
from tests.serve_proc import Load, ServeProc, start_serve

from pairflow.models.scratch import save_untrained_clip

pytestmark = pytest.mark.slow

tritonhttp = pytest.importorskip("tritonclient.http")
# tritonclient.grpc runs in a process of its own (tests/grpc_v2_client.py: it cannot share one
# with kserve, which registers the same protobuf messages)
if importlib.util.find_spec("tritonclient.grpc") is None:
    pytest.skip("tritonclient[grpc] is not installed", allow_module_level=True)

NAME = "pf"
LABELS = ["astronaut", "cat", "coffee", "rocket"]  # the model's labels.json, not serve.labels
CAPTIONS = ["an astronaut in a white suit", "a cat", "a cup of coffee", "a red circle"]
LIMITS = {
    "max_instances": "8",
    "max_body_bytes": str(1024 * 1024),
    "max_image_pixels": "1000000",
    "max_caption_chars": "300",
    "max_concurrency": "4",
    "max_queue": "8",
    "header_timeout_s": "1.5",
    "body_timeout_s": "1.5",
    "torch_threads": "1",
    "grace_period_s": "15",
}


def _photos() -> list[bytes]:
    """Real photographs shipped with scikit-image, as PNG and JPEG files of various sizes."""
    import skimage.data

    out = []
    for sample, fmt, size in [
        ("astronaut", "PNG", (128, 128)),
        ("chelsea", "JPEG", (150, 100)),
        ("coffee", "JPEG", (120, 80)),
        ("rocket", "PNG", (60, 90)),
    ]:
        arr = getattr(skimage.data, sample)()
        buf = io.BytesIO()
        Image.fromarray(arr).resize(size).save(buf, fmt)
        out.append(buf.getvalue())
    return out


PHOTOS = _photos()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def model_uri(mlflow_server: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real pyfunc model version (models from code, safetensors) in the MLflow server."""
    import mlflow.pyfunc

    from pairflow.registry.logged_model import ENTRY_FILE, signature

    root = tmp_path_factory.mktemp("serve-v2")
    clip = save_untrained_clip(root / "clip", CAPTIONS, seed=3)
    labels = root / "labels.json"
    labels.write_text(json.dumps(LABELS))
    local = root / "pyfunc"
    mlflow.pyfunc.save_model(
        str(local),
        python_model=str(ENTRY_FILE),
        artifacts={"hf": str(clip), "labels": str(labels)},
        model_config={"variant": "fp32_torch", "kind": "torch"},
        signature=signature(),
    )
    (uri,) = register_gated_versions(
        mlflow_server,
        "serve-v2",
        [lambda client, run_id: client.log_artifacts(run_id, str(local), "model")],
    )
    return uri


@pytest.fixture(scope="module")
def served(
    model_uri: str, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServeProc]:
    sp = start_serve(
        model_uri,
        tmp_path_factory.mktemp("serve-v2-logs"),
        name=NAME,
        sets=LIMITS,
        tracking_uri=mlflow_server,
    )
    try:
        yield sp
    finally:
        sp.stop()


@pytest.fixture(scope="module")
def pyfunc(model_uri: str, mlflow_server: str) -> Any:
    import mlflow.pyfunc

    from pairflow.registry.logged_model import tracking_uri

    with tracking_uri(mlflow_server):
        return mlflow.pyfunc.load_model(model_uri)


def _alive(sp: ServeProc) -> None:
    """The server still answers a valid request."""
    r = httpx.post(
        f"{sp.url}/v1/models/{NAME}:predict",
        json={"instances": [{"image": _b64(PHOTOS[1]), "caption": "a cat"}]},
        timeout=30,
    )
    assert r.status_code == 200, r.text


def test_ready_only_once_the_model_is_loaded(served: ServeProc) -> None:
    polls = served.polls
    assert not any(server and not model for _, server, model in polls), polls
    assert polls[-1][1:] == (True, True)
    # it was really polled while loading (not ready at first), every ~50 ms
    assert not polls[0][1] and len(polls) > 10
    r = httpx.get(f"{served.url}/v2/health/live")
    assert r.status_code == 200


def _triton_http(sp: ServeProc) -> Any:
    return tritonhttp.InferenceServerClient(url=sp.url.removeprefix("http://"))


def test_metadata_lists_inputs_outputs_and_task(served: ServeProc) -> None:
    meta = _triton_http(served).get_model_metadata(NAME)
    inputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["inputs"]}
    assert inputs == {"image": ("BYTES", [-1]), "caption": ("BYTES", [-1])}
    outputs = {t["name"]: (t["datatype"], t["shape"]) for t in meta["outputs"]}
    dim = outputs["image_embedding"][1][1]
    assert dim > 0 and outputs == {
        "score": ("FP32", [-1]),
        "image_embedding": ("FP32", [-1, dim]),
        "text_embedding": ("FP32", [-1, dim]),
        "label": ("BYTES", [-1]),
        "probabilities": ("FP32", [-1, len(LABELS)]),
    }
    task = meta["parameters"]["task"]
    assert task["values"] == ["score", "embed", "classify"] and task["default"] == "score"
    assert meta["parameters"]["tasks"]["score"]["required"] == ["image", "caption"]
    (answer,) = run_grpc_calls(served.grpc, NAME, [{"op": "metadata"}])
    grpc_meta = answer["metadata"]
    assert {t["name"] for t in grpc_meta["inputs"]} == set(inputs)
    assert {t["name"]: t["shape"] for t in grpc_meta["outputs"]}["probabilities"] == [
        "-1",
        str(len(LABELS)),
    ]


def _inputs(
    module: Any, images: list[bytes] | None, captions: list[str] | None, binary: bool
) -> list[Any]:
    out = []
    if images is not None:
        inp = module.InferInput("image", [len(images)], "BYTES")
        values = images if binary else [_b64(i) for i in images]
        arr = np.array(values, dtype=np.object_)
        inp.set_data_from_numpy(arr, binary_data=binary)
        out.append(inp)
    if captions is not None:
        inp = module.InferInput("caption", [len(captions)], "BYTES")
        arr = np.array([c.encode() for c in captions], dtype=np.object_)
        inp.set_data_from_numpy(arr, binary_data=binary)
        out.append(inp)
    return out


CLIENTS = ["http-binary", "http-json", "grpc"]


def _grpc_call(task: str, images: list[bytes] | None, captions: list[str] | None) -> Any:
    """One infer call for the gRPC client process (raw image bytes travel as base64 in JSON)."""
    b64 = None if images is None else [_b64(i) for i in images]
    return {"op": "infer", "task": task, "images_b64": b64, "captions": captions}


def _infer(sp: ServeProc, kind: str, task: str, images: Any, captions: Any) -> Any:
    if kind == "grpc":
        (answer,) = run_grpc_calls(sp.grpc, NAME, [_grpc_call(task, images, captions)])
        assert "outputs" in answer, answer
        return GrpcResult(answer["outputs"])
    binary = kind == "http-binary"
    outputs = None
    if not binary:  # ask for JSON outputs too
        names = {
            "score": ["score"],
            "embed": [
                n for n, v in (("image_embedding", images), ("text_embedding", captions)) if v
            ],
            "classify": ["label", "probabilities"],
        }[task]
        outputs = [tritonhttp.InferRequestedOutput(n, binary_data=False) for n in names]
    return _triton_http(sp).infer(
        NAME,
        _inputs(tritonhttp, images, captions, binary),
        outputs=outputs,
        parameters={"task": task},
    )


@pytest.mark.parametrize("kind", CLIENTS)
@pytest.mark.parametrize("n", [1, 4])
def test_clients_match_pyfunc(served: ServeProc, pyfunc: Any, kind: str, n: int) -> None:
    images, captions = PHOTOS[:n], CAPTIONS[:n]
    # the pyfunc takes the same image forms: raw bytes and base64 text give the same answer
    ref_scores = pyfunc.predict(pd.DataFrame({"image": images, "caption": captions}))
    ref_b64 = pyfunc.predict(
        pd.DataFrame({"image": [_b64(i) for i in images], "caption": captions})
    )
    np.testing.assert_allclose(ref_scores["score"], ref_b64["score"], atol=1e-6)

    scores = _infer(served, kind, "score", images, captions).as_numpy("score")
    assert scores.shape == (n,)
    np.testing.assert_allclose(scores, ref_scores["score"].to_numpy(), atol=1e-4)

    ref_emb = pyfunc.predict(
        pd.DataFrame({"image": images, "caption": captions}), params={"mode": "embeddings"}
    )
    emb = _infer(served, kind, "embed", images, captions)
    np.testing.assert_allclose(
        emb.as_numpy("image_embedding"), np.stack(ref_emb["image_embedding"]), atol=1e-4
    )
    np.testing.assert_allclose(
        emb.as_numpy("text_embedding"), np.stack(ref_emb["text_embedding"]), atol=1e-4
    )

    ref_lab = pyfunc.predict(pd.DataFrame({"image": images}), params={"mode": "labels"})
    res = _infer(served, kind, "classify", images, None)
    labels = [v.decode() if isinstance(v, bytes) else v for v in res.as_numpy("label")]
    assert labels == list(ref_lab["label"])
    probs = res.as_numpy("probabilities")
    assert probs.shape == (n, len(LABELS))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # the pyfunc's label score is the winning cosine: softmax(100 x cosines) ranks the same
    assert [LABELS[i] for i in probs.argmax(axis=1)] == labels


def test_v1_takes_base64_and_documented_body(served: ServeProc, pyfunc: Any) -> None:
    body = {
        "parameters": {"task": "score"},
        "instances": [
            {"image": _b64(PHOTOS[0]), "caption": CAPTIONS[0]},
            {"image": {"b64": _b64(PHOTOS[1])}, "caption": CAPTIONS[1]},
        ],
    }
    r = httpx.post(f"{served.url}/v1/models/{NAME}:predict", json=body, timeout=30)
    assert r.status_code == 200, r.text
    ref = pyfunc.predict(pd.DataFrame({"image": PHOTOS[:2], "caption": CAPTIONS[:2]}))
    got = [p["score"] for p in r.json()["predictions"]]
    np.testing.assert_allclose(got, ref["score"].to_numpy(), atol=1e-4)


# -- hostile inputs -----------------------------------------------------------------------


def _v2_json(inputs: list[dict[str, Any]], task: str = "score") -> bytes:
    return json.dumps({"parameters": {"task": task}, "inputs": inputs}).encode()


def _v2_bin(images: list[bytes], captions: list[str]) -> tuple[bytes, dict[str, str]]:
    def tensor(items: list[bytes]) -> bytes:
        return b"".join(len(x).to_bytes(4, "little") + x for x in items)

    img, cap = tensor(images), tensor([c.encode() for c in captions])
    head = json.dumps(
        {
            "parameters": {"task": "score"},
            "inputs": [
                {
                    "name": "image",
                    "datatype": "BYTES",
                    "shape": [len(images)],
                    "parameters": {"binary_data_size": len(img)},
                },
                {
                    "name": "caption",
                    "datatype": "BYTES",
                    "shape": [len(captions)],
                    "parameters": {"binary_data_size": len(cap)},
                },
            ],
        }
    ).encode()
    return head + img + cap, {"inference-header-content-length": str(len(head))}


def _bomb() -> bytes:
    """A 4000 x 4000 px PNG of ~50 kB: 16 M pixels, over the 1 M pixel limit."""
    buf = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buf, "PNG", optimize=True)
    return buf.getvalue()


def _image(data: Any) -> dict[str, Any]:
    return {"name": "image", "datatype": "BYTES", "shape": [len(data)], "data": data}


def _caption(data: Any, shape: list[int] | None = None) -> dict[str, Any]:
    return {"name": "caption", "datatype": "BYTES", "shape": shape or [len(data)], "data": data}


PNG = _b64(PHOTOS[0])
V2 = f"/v2/models/{NAME}/infer"
V1 = f"/v1/models/{NAME}:predict"
HOSTILE: dict[str, tuple[str, bytes, dict[str, str], int, str]] = {
    "malformed json v2": (V2, b'{"inputs": [', {}, 400, "not valid JSON"),
    "malformed json v1": (V1, b'{"instances": [', {}, 400, "Unrecognized request format"),
    "inputs not a list": (V2, b'{"inputs": 3}', {}, 400, "inputs: missing or not a list"),
    "wrong datatype": (
        V2,
        _v2_json([_image([PNG]), {**_caption(["x"]), "datatype": "FP32", "data": [1.0]}]),
        {},
        400,
        "inputs.caption: datatype must be BYTES",
    ),
    "number in BYTES": (
        V2,
        _v2_json([_image([3]), _caption(["x"])]),
        {},
        400,
        "inputs.image.data: expected strings",
    ),
    "shape mismatch": (
        V2,
        _v2_json([_image([PNG]), _caption(["x"], [2])]),
        {},
        400,
        "inputs.caption: shape [2] needs 2 values, got 1",
    ),
    "lengths differ": (
        V2,
        _v2_json([_image([PNG, PNG]), _caption(["x"])]),
        {},
        400,
        "inputs: lengths differ",
    ),
    "bad base64": (
        V2,
        _v2_json([_image(["***not base64***"]), _caption(["x"])]),
        {},
        400,
        "instances[0].image: not valid base64",
    ),
    "non-image bytes": (
        V2,
        *_v2_bin([b"\x00\x01 this is not an image"], ["x"]),
        400,
        "instances[0].image: not_an_image",
    ),
    "binary size lies": (
        V2,
        _v2_bin([PHOTOS[1]], ["x"])[0][:-3],
        _v2_bin([PHOTOS[1]], ["x"])[1],
        400,
        "binary bytes are left",
    ),
    "decompression bomb": (
        V2,
        *_v2_bin([_bomb()], ["x"]),
        400,
        "instances[0].image: too many pixels",
    ),
    "huge caption": (
        V2,
        _v2_json([_image([PNG]), _caption(["word " * 2000])]),
        {},
        400,
        "instances[0].caption: 10000 characters, the limit is 300",
    ),
    "too many instances": (
        V2,
        _v2_json([_image([PNG] * 9), _caption(["x"] * 9)]),
        {},
        400,
        "instances: 9 in one request, the limit is 8",
    ),
    "unknown task": (
        V2,
        _v2_json([_caption(["x"])], task="detect"),
        {},
        400,
        "task: 'detect' is not one of",
    ),
    "body over the cap": (
        V1,
        b'{"instances": "' + b"A" * (1024 * 1024 + 10) + b'"}',
        {},
        413,
        "the limit is 1048576",
    ),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_request_is_4xx_with_message(served: ServeProc, case: str) -> None:
    path, body, headers, status, message = HOSTILE[case]
    r = httpx.post(served.url + path, content=body, headers=headers, timeout=30)
    assert r.status_code == status, (case, r.status_code, r.text)
    assert message in r.json()["error"], (case, r.text)
    _alive(served)


def test_grpc_client_mistakes_are_invalid_argument(served: ServeProc) -> None:
    cases = {
        "instances[0].image: not_an_image": (
            [b"\x00\x01 this is not an image"],
            ["x"],
            "score",
            "INVALID_ARGUMENT",
        ),
        "instances[0].image: too many pixels": ([_bomb()], ["x"], "score", "INVALID_ARGUMENT"),
        "instances: 9 in one request": ([PHOTOS[0]] * 9, ["x"] * 9, "score", "INVALID_ARGUMENT"),
        "task: 'detect' is not one of": ([PHOTOS[0]], ["x"], "detect", "INVALID_ARGUMENT"),
        "larger than max": ([PHOTOS[0] * 200], ["x"], "score", "RESOURCE_EXHAUSTED"),
    }
    calls = [_grpc_call(task, images, captions) for images, captions, task, _ in cases.values()]
    # the same client (same channel) still gets an answer after every mistake
    calls.append(_grpc_call("score", PHOTOS[:1], CAPTIONS[:1]))
    answers = run_grpc_calls(served.grpc, NAME, calls)
    for (message, (_, _, _, status)), answer in zip(cases.items(), answers[:-1], strict=True):
        assert "error" in answer, (message, answer)
        error = answer["error"]
        assert status in error["status"] and message in error["message"], (message, error)
    assert np.asarray(answers[-1]["outputs"]["score"]).shape == (1,)


def test_chunked_body_over_the_cap_is_cut_off_while_read(served: ServeProc) -> None:
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        yield b'{"instances": "'
        for _ in range(200):  # 200 x 64 kB = 12.5 MB if all were read
            sent += 65536
            yield b"A" * 65536

    try:
        r = httpx.post(served.url + V1, content=chunks(), timeout=30)
        assert r.status_code == 413 and "serve.max_body_bytes" in r.json()["error"], r.text
    except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
        pass  # the server closed the connection after its 413 while we were still writing
    assert sent < 8 * 1024 * 1024, sent  # refused long before the whole body was sent
    _alive(served)


def _raw_exchange(sp: ServeProc, parts: list[bytes], pause: float) -> tuple[bytes, float]:
    """Send ``parts`` with ``pause`` s between them; return what came back and when."""
    host, port = sp.url.removeprefix("http://").split(":")
    start = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=20) as s:
        got = b""
        try:
            for part in parts:
                s.sendall(part)
                time.sleep(pause)
        except OSError:
            pass  # closed by the server mid-trickle
        s.settimeout(20)
        try:
            while chunk := s.recv(65536):
                got += chunk
        except OSError:
            pass
    return got, time.monotonic() - start


def test_slow_clients_are_timed_out(served: ServeProc) -> None:
    head = f"POST {V1} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    # headers trickled one byte every 0.2 s: cut off after header_timeout_s (1.5 s)
    got, took = _raw_exchange(served, [bytes([c]) for c in head.encode()], 0.2)
    assert got.startswith(b"HTTP/1.1 408") and b"headers not received" in got, got
    assert took < 6
    # body trickled: 408 after body_timeout_s (1.5 s)
    body = json.dumps({"instances": [{"image": PNG, "caption": "x"}]}).encode()
    parts = [(head + f"content-length: {len(body)}\r\n\r\n").encode()]
    parts += [body[i : i + 10] for i in range(0, 200, 10)]
    got, took = _raw_exchange(served, parts, 0.2)
    assert got.startswith(b"HTTP/1.1 408") and b"not received within 1.5 s" in got, got
    # an idle connection that never sends a byte is closed too
    got, took = _raw_exchange(served, [b""], 0.0)
    assert got.startswith(b"HTTP/1.1 408") and took < 6
    _alive(served)


def test_overload_is_answered_503_fast(served: ServeProc, capsys: Any) -> None:
    body = json.dumps(
        {"instances": [{"image": _b64(PHOTOS[i % 4]), "caption": "x"} for i in range(8)]}
    ).encode()
    load = Load(served.url, V1, body, threads=16, fresh=False).start()
    time.sleep(6)
    load.stop()
    codes = [c for _, _, c in load.results]
    assert set(codes) <= {200, 503}, codes
    rejected = [s for _, s, c in load.results if c == 503]
    served_s = [s for _, s, c in load.results if c == 200]
    assert rejected and served_s, codes
    # refused at once, not queued: far quicker than an answer (client threads and a shared
    # CPU add their own overhead to both)
    fast, slow = statistics.median(rejected), statistics.median(served_s)
    with capsys.disabled():
        print(
            f"\noverload: {len(rejected)} x 503 (median {fast * 1000:.0f} ms), "
            f"{len(served_s)} x 200 (median {slow * 1000:.0f} ms)"
        )
    assert fast < slow / 3, (fast, slow)
    metrics = httpx.get(f"{served.url}/metrics").text
    assert 'pairflow_predictor_rejected_total{model_name="pf",reason="overloaded"}' in metrics
    _alive(served)


# -- soak ---------------------------------------------------------------------------------


def test_soak_valid_and_hostile_traffic(served: ServeProc, capsys: Any) -> None:
    """>= 60 s: 3 valid clients (one of them maximal: 8 photos) and 1 hostile client."""
    seconds = float(os.environ.get("PAIRFLOW_SOAK_S", "60"))
    small = json.dumps({"instances": [{"image": PNG, "caption": "a cat"}]}).encode()
    maximal = json.dumps(
        {"instances": [{"image": _b64(PHOTOS[i % 4]), "caption": "x" * 300} for i in range(8)]}
    ).encode()
    v2, v2_headers = _v2_bin(PHOTOS[:4], CAPTIONS)
    assert len(maximal) < 1024 * 1024
    valid = [Load(served.url, V1, small, 1), Load(served.url, V1, maximal, 1)]
    valid_v2: list[tuple[float, int | str]] = []
    stop = threading.Event()

    def v2_client() -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = httpx.post(served.url + V2, content=v2, headers=v2_headers, timeout=60)
                valid_v2.append((time.monotonic() - t0, r.status_code))
            except httpx.TransportError as exc:
                valid_v2.append((time.monotonic() - t0, type(exc).__name__))

    hostile_codes: list[tuple[str, int]] = []

    def hostile_client() -> None:
        cases = [c for c in HOSTILE if c != "decompression bomb"] + ["decompression bomb"]
        i = 0
        while not stop.is_set():
            case = cases[i % len(cases)]
            path, body, headers, _, _ = HOSTILE[case]
            try:
                r = httpx.post(served.url + path, content=body, headers=headers, timeout=60)
                hostile_codes.append((case, r.status_code))
            except httpx.TransportError:
                hostile_codes.append((case, -1))
            i += 1

    threads = [threading.Thread(target=v2_client), threading.Thread(target=hostile_client)]
    for load in valid:
        load.start()
    for t in threads:
        t.start()
    time.sleep(min(15.0, seconds / 4))
    rss_warm = served.rss_bytes()
    rss_peak = rss_warm
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(1)
        rss_peak = max(rss_peak, served.rss_bytes())
    stop.set()
    for load in valid:
        load.stop()
    for t in threads:
        t.join(timeout=120)
    rss_end = served.rss_bytes()
    results = [(s, c) for load in valid for _, s, c in load.results] + valid_v2
    bad = [c for _, c in results if c != 200]
    assert not bad, bad[:20]
    assert all(400 <= code < 500 for _, code in hostile_codes), hostile_codes
    lat = sorted(s for s, _ in results)
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
    growth = (rss_peak - rss_warm) / rss_warm
    report = (
        f"soak {seconds:.0f} s: {len(results)} valid requests (0 failed), "
        f"{len(hostile_codes)} hostile (all 4xx); "
        f"p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; "
        f"RSS warm {rss_warm / 2**20:.0f} MiB, peak {rss_peak / 2**20:.0f} MiB "
        f"(+{growth:.1%}), end {rss_end / 2**20:.0f} MiB; load avg {os.getloadavg()[0]:.1f}"
    )
    with capsys.disabled():
        print("\n" + report)
    Path(os.environ.get("PAIRFLOW_SOAK_REPORT", "/dev/null")).write_text(report + "\n")
    assert growth <= 0.20, report


# -- shutdown (stops the module's server: keep last) -----------------------------------------


def _read_until_closed(sock: socket.socket) -> bytes:
    sock.settimeout(10)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    sock.close()
    return b"".join(chunks)


def test_sigterm_under_load_finishes_accepted_and_refuses_new(served: ServeProc) -> None:
    body = json.dumps(
        {"instances": [{"image": _b64(PHOTOS[i % 4]), "caption": "x"} for i in range(4)]}
    ).encode()
    load = Load(served.url, V1, body, threads=6).start()
    time.sleep(3)
    host, port = served.url.removeprefix("http://").split(":")
    ready = f"GET /v2/models/{NAME}/ready HTTP/1.1\r\nhost: x\r\n".encode()
    fresh = socket.create_connection((host, int(port)))  # accepted, nothing sent yet
    partial = socket.create_connection((host, int(port)))
    partial.sendall(ready)  # headers begun, not finished
    idle = socket.create_connection((host, int(port)))  # kept alive between two requests
    idle.sendall(ready + b"\r\n")
    idle.settimeout(10)
    first = b""
    while b'"ready":true}' not in first:  # the first answer, headers and body
        chunk = idle.recv(4096)
        assert chunk, f"closed before its first answer was complete: {first!r}"
        first += chunk
    assert first.startswith(b"HTTP/1.1 200"), first
    time.sleep(0.3)
    sigterm_at = time.monotonic()
    served.proc.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    # sent after SIGTERM on connections the server accepted before it: answered, then closed
    fresh.sendall(ready + b"\r\n")
    partial.sendall(b"\r\n")
    for sock in (fresh, partial):
        answer = _read_until_closed(sock)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert b"connection: close" in answer.lower(), answer
    assert _read_until_closed(idle) == b""  # idle between requests: closed at once
    assert served.proc.wait(timeout=40) == 0, served.tail()
    load.stop()
    before = [c for t0, _, c in load.results if t0 < sigterm_at - 0.5]
    after = [c for t0, _, c in load.results if t0 >= sigterm_at]
    assert before and set(before) == {200}, before  # accepted before SIGTERM: all completed
    # any request: completed, or refused; never an error status or a cut answer. A connection
    # that reached the kernel's accept queue as the listener closed is reset before the server
    # read a byte of it (httpx ReadError, no response bytes): refused, for requests sent after
    # SIGTERM only. A cut answer would be a RemoteProtocolError.
    sent_before = [c for t0, _, c in load.results if t0 < sigterm_at]
    assert set(sent_before) <= {200, "ConnectError"}, sent_before
    assert set(after) <= {200, "ConnectError", "ReadError"}, after
    assert "ConnectError" in after, after  # new connections were refused
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{served.url}/v2/health/live", timeout=2)
