"""Request logging end to end: a real ``pairflow serve`` posting CloudEvents to a real
``pairflow monitor-sink`` writing to a real S3 API (moto server), read back with
``read_window``; then the storage outage (the moto server stopped while traffic flows).

Tests run in file order on one set of processes; the outage test is last.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pytest
from PIL import Image
from tests.serve_proc import ServeProc, free_port, start_serve

from pairflow.config import S3Config
from pairflow.data import s3 as s3io
from pairflow.models.scratch import save_untrained_clip
from pairflow.serve.requestlog.sink_launch import SinkHandle, start_sink
from pairflow.serve.requestlog.window import read_window

pytestmark = pytest.mark.slow
tritonhttp = pytest.importorskip("tritonclient.http")

NAME = "pf"
CAPTIONS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
MAX_BUFFER_ROWS = 40
_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _image(colour: tuple[int, int, int], fmt: str, size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, fmt)
    return buf.getvalue()


IMAGES = [
    _image((220, 30, 30), "PNG", (48, 40)),
    _image((30, 30, 220), "JPEG", (64, 64)),
    _image((30, 200, 30), "PNG", (32, 56)),
    _image((230, 220, 20), "JPEG", (40, 40)),
]


@dataclass
class Moto:
    """A moto S3 server process this module can stop and start again on the same port."""

    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                httpx.get(self.url + "/moto-api/", timeout=1)
                s3io.clear_client_cache()
                return
            except httpx.TransportError:
                time.sleep(0.1)
        raise AssertionError(f"moto did not start: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class Stack:
    moto: Moto
    s3: S3Config
    bucket: str
    prefix: str
    sink: SinkHandle
    serve: ServeProc
    control: ServeProc  # the same model with logging off: the latency baseline


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("monitor-logging")
    clip = save_untrained_clip(root / "clip", CAPTIONS, seed=5)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in _CREDENTIALS.items():
            mp.setenv(key, value)
        for key in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(key, raising=False)
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
        mp.setenv("AWS_CONFIG_FILE", os.devnull)
        moto = Moto(free_port(), root / "moto.log")
        moto.start()
        s3 = S3Config(endpoint_url=moto.url)
        bucket = "pairflow-monitor-logs"
        s3io.s3_client(s3).create_bucket(Bucket=bucket)
        prefix = f"s3://{bucket}/logs/{NAME}"
        sink = start_sink(
            prefix,
            sets=[
                f"data.s3.endpoint_url={moto.url}",
                "monitor.flush_rows=8",
                "monitor.flush_seconds=0.5",
                f"monitor.max_buffer_rows={MAX_BUFFER_ROWS}",
            ],
            log_path=root / "sink.log",
            retry_s=0.5,
        )
        serve = control = None
        try:
            control = start_serve(
                str(clip), root, name=NAME, sets={"torch_threads": "1", "max_batch_delay_ms": "0"}
            )
            serve = start_serve(
                str(clip),
                root,
                name=NAME,
                sets={"torch_threads": "1", "max_batch_delay_ms": "0"},
                extra_sets=sink.serve_args(sample_rate=1.0)[1::2],
            )
            yield Stack(moto, s3, bucket, prefix, sink, serve, control)
        finally:
            for proc in (serve, control):
                if proc is not None:
                    proc.stop()
            sink.stop()
            moto.stop()
            s3io.clear_client_cache()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _triton(stack: Stack) -> Any:
    return tritonhttp.InferenceServerClient(url=stack.serve.url.removeprefix("http://"))


def _v2(
    stack: Stack,
    images: list[bytes],
    captions: list[str],
    *,
    binary: bool,
    task: str,
    request_id: str,
) -> Any:
    img = tritonhttp.InferInput("image", [len(images)], "BYTES")
    img.set_data_from_numpy(
        np.array(images if binary else [_b64(i) for i in images], dtype=np.object_),
        binary_data=binary,
    )
    cap = tritonhttp.InferInput("caption", [len(captions)], "BYTES")
    cap.set_data_from_numpy(np.array(captions, dtype=np.object_), binary_data=binary)
    outputs = None
    if binary and task == "score":
        outputs = [tritonhttp.InferRequestedOutput("score", binary_data=True)]
    return _triton(stack).infer(
        NAME, [img, cap], request_id=request_id, parameters={"task": task}, outputs=outputs
    )


def _metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name):
            continue
        m = re.match(r"^(\w+)(\{[^}]*\})?\s+(\S+)$", line)
        if m is None or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total += float(m.group(3))
    return total


def _own_rows(table: pa.Table, tag: str) -> pa.Table:
    """The rows of requests whose ids carry ``tag`` (tests share the sink, and a window that
    starts a second early can hold the previous test's last rows)."""
    ids = table.column("request_id").to_pylist()
    return table.filter(pa.array([i.startswith(f"{tag}-") for i in ids], type=pa.bool_()))


def _wait_rows(
    stack: Stack, start: datetime, want: int, tag: str | None = None, timeout_s: float = 60
) -> pa.Table:
    deadline = time.monotonic() + timeout_s
    while True:
        end = datetime.now(UTC) + timedelta(minutes=1)
        table = read_window(stack.prefix, start, end, stack.s3)
        if tag is not None:
            table = _own_rows(table, tag)
        if table.num_rows >= want or time.monotonic() > deadline:
            return table
        stack.sink.flush()
        time.sleep(0.2)


def test_logged_rows_match_what_the_client_sent_and_received(stack: Stack) -> None:
    start = datetime.now(UTC) - timedelta(seconds=1)
    # V2 binary (tritonclient, binary score output), V2 JSON, V1 JSON: two pairs each
    got_bin = _v2(stack, IMAGES[:2], CAPTIONS[:2], binary=True, task="score", request_id="bin-1")
    got_json = _v2(stack, IMAGES[2:], CAPTIONS[2:], binary=False, task="score", request_id="js-1")
    v1 = httpx.post(
        f"{stack.serve.url}/v1/models/{NAME}:predict",
        json={
            "task": "score",
            "instances": [
                {"image": {"b64": _b64(IMAGES[0])}, "caption": CAPTIONS[3]},
                {"image": _b64(IMAGES[3]), "caption": CAPTIONS[1]},
            ],
        },
        headers={"ce-id": "v1-1"},
        timeout=60,
    )
    assert v1.status_code == 200, v1.text
    sent = {
        "bin-1": list(
            zip(IMAGES[:2], CAPTIONS[:2], got_bin.as_numpy("score").tolist(), strict=True)
        ),
        "js-1": list(
            zip(IMAGES[2:], CAPTIONS[2:], got_json.as_numpy("score").tolist(), strict=True)
        ),
        "v1-1": [
            (IMAGES[0], CAPTIONS[3], v1.json()["predictions"][0]["score"]),
            (IMAGES[3], CAPTIONS[1], v1.json()["predictions"][1]["score"]),
        ],
    }
    version = got_bin.get_response()["model_version"]
    assert version.startswith("local-") and v1.json()["model_version"] == version
    # the same pairs embedded (an embed request, itself logged with task "embed")
    emb = _v2(stack, IMAGES, CAPTIONS, binary=False, task="embed", request_id="emb-1")
    img_emb = emb.as_numpy("image_embedding")
    txt_emb = emb.as_numpy("text_embedding")

    table = _wait_rows(stack, start, 10)
    rows = table.to_pylist()
    assert table.num_rows == 10, rows
    by_id: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_id.setdefault(row["request_id"], []).append(row)
    assert set(by_id) == {"bin-1", "js-1", "v1-1", "emb-1"}
    for rid, pairs in sent.items():
        logged = sorted(by_id[rid], key=lambda r: r["instance"])
        assert len(logged) == len(pairs)
        for row, (image, caption, score) in zip(logged, pairs, strict=True):
            assert row["task"] == "score" and row["model_name"] == NAME
            assert row["model_version"] == version
            assert row["image_sha256"] == hashlib.sha256(image).hexdigest()
            assert row["image_bytes"] == len(image)
            assert row["image_format"] == Image.open(io.BytesIO(image)).format
            assert (row["width"], row["height"]) == Image.open(io.BytesIO(image)).size
            assert row["caption"] == caption and row["caption_chars"] == len(caption)
            assert row["caption_tokens"] == len(caption.split())
            assert row["score"] == pytest.approx(score, rel=1e-6, abs=1e-6)
            i, j = IMAGES.index(image), CAPTIONS.index(caption)
            np.testing.assert_allclose(row["image_emb"], img_emb[i], atol=2e-3)
            np.testing.assert_allclose(row["text_emb"], txt_emb[j], atol=2e-3)
            # the score is the cosine of the logged embeddings (fp16 tolerance)
            assert float(np.dot(row["image_emb"], row["text_emb"])) == pytest.approx(
                score, abs=5e-3
            )
            assert row["image_uri"] == f"{stack.prefix}/images/{row['image_sha256']}." + (
                "png" if image.startswith(b"\x89PNG") else "jpg"
            )
            assert s3io.get_bytes(row["image_uri"], stack.s3) == image
    embeds = sorted(by_id["emb-1"], key=lambda r: r["instance"])
    assert [r["task"] for r in embeds] == ["embed"] * 4
    assert [r["score"] for r in embeds] == [None] * 4
    # parts sit under the partition of their rows' hour
    keys = s3io.list_keys(f"{stack.prefix}/", stack.s3)
    hour = f"dt={rows[0]['ts']:%Y-%m-%d}/hour={rows[0]['ts']:%H}/part-"
    assert any(hour in k and k.endswith(".parquet") for k in keys), keys


def _post_event(stack: Stack, headers: dict[str, str], body: bytes) -> httpx.Response:
    return httpx.post(stack.sink.url + "/", content=body, headers=headers, timeout=10)


def _ce(event_id: str, kind: str, **extra: str) -> dict[str, str]:
    return {
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": f"org.kubeflow.serving.inference.{kind}",
        "ce-source": "http://test/",
        "content-type": "application/json",
        **extra,
    }


def test_malformed_events_are_400_with_the_reason(stack: Stack) -> None:
    request = b'{"instances": [{"image": "aGk=", "caption": "x"}]}'
    cases: list[tuple[dict[str, str], bytes, str]] = [
        ({"content-type": "application/json"}, request, "not a CloudEvent"),
        ({**_ce("m1", "request"), "ce-specversion": "0.3"}, request, "specversion"),
        (_ce("m2", "other"), request, "expected org.kubeflow.serving.inference.request"),
        ({k: v for k, v in _ce("m3", "request").items() if k != "ce-id"}, request, "missing"),
        (_ce("m4", "request"), b"not json", "not a V1/V2 inference request"),
        (_ce("m5", "request"), b'{"instances": 3}', "instances: expected a list"),
        (_ce("m6", "response"), b'{"pairflow_monitor": {"format": "x"}}', "format"),
        (
            {"content-type": "application/cloudevents+json"},
            b'{"specversion": "1.0", "id": "m7", "type": "org.kubeflow.serving.inference.request",'
            b' "source": "s", "data_base64": "%%%"}',
            "data_base64 is not base64",
        ),
    ]
    for headers, body, reason in cases:
        r = _post_event(stack, headers, body)
        assert r.status_code == 400, (headers, r.text)
        assert reason in r.json()["error"], (reason, r.text)
    # a structured-mode request + a binary-mode unmarked response: paired, counted, no row
    before = _metric(
        httpx.get(stack.sink.url + "/metrics").text, "pairflow_monitor_sink_unsampled_total"
    )
    structured = (
        b'{"specversion": "1.0", "id": "u1", "type": "org.kubeflow.serving.inference.request",'
        b' "source": "s", "datacontenttype": "application/json", "data": ' + request + b"}"
    )
    r = _post_event(stack, {"content-type": "application/cloudevents+json"}, structured)
    assert r.status_code == 200 and r.json()["outcome"] == "held", r.text
    r = _post_event(stack, _ce("u1", "response"), b'{"predictions": [{"score": 0.1}]}')
    assert r.status_code == 200 and r.json()["outcome"] == "unsampled", r.text
    after = _metric(
        httpx.get(stack.sink.url + "/metrics").text, "pairflow_monitor_sink_unsampled_total"
    )
    assert after == before + 1
    assert stack.sink.health()["pending_events"] == 0


def _timed_requests(
    stack: Stack, n: int, tag: str, control: list[float] | None = None
) -> list[tuple[int, float]]:
    """``n`` sequential score requests to the logging server; with ``control``, each one is
    paired with the same request to the logging-off server, in alternating order, and the
    control's seconds are appended there (the same machine load for both)."""
    out = []
    with httpx.Client(timeout=60) as client:
        for k in range(n):
            body = {"instances": [{"image": _b64(IMAGES[k % 4]), "caption": CAPTIONS[k % 4]}]}
            path = f"/v1/models/{NAME}:predict"
            targets = [stack.serve.url] + ([stack.control.url] if control is not None else [])
            for url in targets if k % 2 == 0 else targets[::-1]:
                t0 = time.perf_counter()
                r = client.post(url + path, json=body, headers={"ce-id": f"{tag}-{k}"})
                elapsed = time.perf_counter() - t0
                if url == stack.serve.url:
                    out.append((r.status_code, elapsed))
                else:
                    assert r.status_code == 200, r.text
                    assert control is not None
                    control.append(elapsed)
    return out


def _p95(values: list[float]) -> float:
    return float(np.percentile(values, 95))


def test_storage_outage_never_fails_a_prediction_and_buffers_then_drops(stack: Stack) -> None:
    pre_start = datetime.now(UTC) - timedelta(seconds=1)
    before_control: list[float] = []
    before = _timed_requests(stack, 30, "pre", before_control)
    assert all(code == 200 for code, _ in before)
    pre = _wait_rows(stack, pre_start, 30, "pre")
    assert pre.num_rows == 30  # nothing left in the buffer
    metrics0 = httpx.get(stack.sink.url + "/metrics").text
    stack.moto.stop()
    outage_start = datetime.now(UTC) - timedelta(seconds=1)
    during_control: list[float] = []
    during = _timed_requests(stack, 2 * MAX_BUFFER_ROWS, "out", during_control)
    assert all(code == 200 for code, _ in during), [c for c, _ in during if c != 200]
    # the emitter never waits on the sink, and the sink never on storage: during the outage
    # the logging server's p95 stays in the range of the logging-off server measured at the
    # same time (interleaved), as it was before the outage
    figures = {
        "p95_before": _p95([s for _, s in before]),
        "p95_before_control": _p95(before_control),
        "p95_during": _p95([s for _, s in during]),
        "p95_during_control": _p95(during_control),
    }
    assert figures["p95_during"] < 2 * figures["p95_during_control"] + 0.01, figures
    print(f"outage latency (s): {figures}")
    deadline = time.monotonic() + 60
    while True:
        metrics = httpx.get(stack.sink.url + "/metrics").text
        dropped = _metric(metrics, "pairflow_monitor_sink_dropped_total", reason="storage")
        if dropped > _metric(metrics0, "pairflow_monitor_sink_dropped_total", reason="storage"):
            break
        assert time.monotonic() < deadline, metrics
        time.sleep(0.2)
    assert _metric(metrics, "pairflow_monitor_sink_storage_up") == 0
    assert _metric(metrics, "pairflow_monitor_sink_storage_errors_total") > 0
    assert _metric(metrics, "pairflow_monitor_sink_buffered_rows") == MAX_BUFFER_ROWS
    assert stack.sink.health()["storage_up"] is False
    log = stack.sink.tail()
    assert "storage is down" in log and "buffer full" in log, log
    r = httpx.post(stack.sink.url + "/flush", timeout=120)
    assert r.status_code == 503 and "storage down" in r.json()["error"]

    # storage back (a fresh moto: the bucket is recreated): the buffered rows are written
    stack.moto.start()
    s3io.s3_client(stack.s3).create_bucket(Bucket=stack.bucket)
    table = _wait_rows(stack, outage_start, MAX_BUFFER_ROWS)
    ids = table.column("request_id").to_pylist()
    assert all(i.startswith("out-") for i in ids), ids  # nothing of the earlier requests
    assert len(ids) == MAX_BUFFER_ROWS and len(set(ids)) == MAX_BUFFER_ROWS
    # the first rows of the outage were kept, the later ones dropped
    assert set(ids) == {f"out-{k}" for k in range(MAX_BUFFER_ROWS)}
    health = stack.sink.health()
    assert health["storage_up"] is True and health["buffered_rows"] == 0, health
    assert "storage is back" in stack.sink.tail()


def test_sink_down_never_fails_a_prediction_and_the_emitter_counts_drops(stack: Stack) -> None:
    last_start = datetime.now(UTC) - timedelta(seconds=1)
    assert [code for code, _ in _timed_requests(stack, 5, "last")] == [200] * 5
    time.sleep(0.3)  # the emitter's posts land (the writer may or may not have flushed yet)
    assert stack.sink.stop() == 0, stack.sink.tail()  # SIGTERM: writes what it holds, exits 0
    assert "buffered rows on shutdown" in stack.sink.tail()
    last = _own_rows(read_window(stack.prefix, last_start, datetime.now(UTC), stack.s3), "last")
    assert sorted(last.column("request_id").to_pylist()) == [f"last-{k}" for k in range(5)]
    metric = "pairflow_monitor_emit_dropped_total"
    before = _metric(
        httpx.get(f"{stack.serve.url}/metrics").text, metric, reason="sink_unreachable"
    )
    results = _timed_requests(stack, 20, "down")
    assert [code for code, _ in results] == [200] * 20
    deadline = time.monotonic() + 30
    while True:
        text = httpx.get(f"{stack.serve.url}/metrics").text
        dropped = _metric(text, metric, reason="sink_unreachable")
        if dropped - before == 20 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert dropped - before == 20, text
    assert "request log: dropping sampled requests (sink_unreachable" in stack.serve.tail()
