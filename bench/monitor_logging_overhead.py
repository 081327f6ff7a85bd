"""Request logging's cost to the predictor: p50/p95 of one ``score`` request with logging at
``monitor.sample_rate=1.0`` (every response marked, its CloudEvents posted to a running
``pairflow monitor-sink`` writing Parquet to a local folder) vs logging off.

Two real ``pairflow serve`` processes of the same tiny CLIP (one torch thread each), requests
sent one at a time and interleaved between them (A, B, A, B, ...) so both see the same
machine load; V1 JSON and V2 binary (tritonclient's format) bodies. Written to
``bench/results/monitor_logging_overhead.json``.
"""

from __future__ import annotations

import base64
import io
import json
import os
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from bench.common import write_result
from pairflow.models.scratch import save_untrained_clip
from pairflow.serve.requestlog.sink_launch import free_port, start_sink

STAGE = "serve"
NAME = "pf"
CAPTIONS = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
ROUNDS = int(os.environ.get("PAIRFLOW_BENCH_ROUNDS", "150"))


def _start(model: Path, log: Path, sets: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "pairflow.cli", "serve", "--model", str(model)]
    cmd += ["--port", str(port), "--name", NAME]
    for item in ["serve.torch_threads=1", "serve.max_batch_delay_ms=0", *sets]:
        cmd += ["--set", item]
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v2/models/{NAME}/ready", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"serve not ready: {log.read_text()[-2000:]}")


def _bodies() -> list[tuple[str, bytes, dict[str, str]]]:
    out: list[tuple[str, bytes, dict[str, str]]] = []
    for k, colour in enumerate([(200, 30, 30), (30, 30, 200), (30, 200, 30), (220, 220, 20)]):
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), colour).save(buf, "PNG")
        image, caption = buf.getvalue(), CAPTIONS[k]
        v1 = {"instances": [{"image": base64.b64encode(image).decode(), "caption": caption}]}
        out.append((f"/v1/models/{NAME}:predict", json.dumps(v1).encode(), {}))
        img = struct.pack("<I", len(image)) + image
        cap = struct.pack("<I", len(caption)) + caption.encode()
        head = json.dumps(
            {
                "parameters": {"task": "score"},
                "inputs": [
                    {
                        "name": "image",
                        "shape": [1],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(img)},
                    },
                    {
                        "name": "caption",
                        "shape": [1],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": len(cap)},
                    },
                ],
            }
        ).encode()
        headers = {"inference-header-content-length": str(len(head))}
        out.append((f"/v2/models/{NAME}/infer", head + img + cap, headers))
    return out


def _stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": 1000 * statistics.median(ordered),
        "p95_ms": 1000 * ordered[int(0.95 * (len(ordered) - 1))],
        "n": len(ordered),
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        root = Path(tmp)
        clip = save_untrained_clip(root / "clip", CAPTIONS, seed=5)
        sink = start_sink(str(root / "logs"), log_path=root / "sink.log")
        procs = []
        try:
            on, on_url = _start(
                clip,
                root / "on.log",
                [f"monitor.sink_url={sink.url}", "monitor.sample_rate=1.0"],
            )
            procs.append(on)
            off, off_url = _start(clip, root / "off.log", [])
            procs.append(off)
            bodies = _bodies()
            times: dict[str, list[float]] = {"on": [], "off": []}
            with httpx.Client(timeout=60) as client:
                for k in range(ROUNDS + 10):
                    path, body, headers = bodies[k % len(bodies)]
                    order = [("on", on_url), ("off", off_url)]
                    if k % 2:
                        order.reverse()
                    for label, url in order:
                        t0 = time.perf_counter()
                        r = client.post(url + path, content=body, headers=headers)
                        elapsed = time.perf_counter() - t0
                        if r.status_code != 200:
                            raise RuntimeError(f"{label}: {r.status_code} {r.text}")
                        if k >= 10:  # warm-up rounds are not counted
                            times[label].append(elapsed)
            written = sink.flush()
            metrics = httpx.get(sink.url + "/metrics").text
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(30)
            sink.stop()
        rows = sum(
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("pairflow_monitor_sink_rows_written_total")
        )
        result: dict[str, Any] = {
            "rounds": ROUNDS,
            "logging_on": _stats(times["on"]),
            "logging_off": _stats(times["off"]),
            "rows_logged": rows,
            "rows_flushed_at_end": written,
            "note": "sequential requests, interleaved on/off; 64x64 PNG, V1 JSON and V2 binary "
            "alternating; sink writing Parquet to a local folder",
        }
        result["p50_overhead_ms"] = result["logging_on"]["p50_ms"] - result["logging_off"]["p50_ms"]
        out = write_result("monitor_logging_overhead", result)
        print(json.dumps(result, indent=2))
        print(f"written: {out}")


if __name__ == "__main__":
    main()
