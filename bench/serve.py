"""Model serving throughput at a latency SLO: pairflow (batched, unbatched) vs mlflow serve.

Three servers of the same tiny CLIP (64 px, width 64, 2 layers per tower; weights do not
matter for speed), each started as a real process on 127.0.0.1 and measured one after the
other in the same run, with the same load generator:

- ``pairflow serve`` with dynamic micro-batching (``serve.batching=true``);
- ``pairflow serve`` without it (each request is its own forward pass);
- ``mlflow models serve --env-manager local`` of a pyfunc written as models-from-code (a
  small Python file loading the same CLIP directory as an artifact; no pickled model).

Load: async httpx clients in a closed loop (each sends its next request when the previous
answer arrives) at increasing concurrency; one request = one image (PNG, base64) + caption
scored. Reported per server: requests/s and p50/p99 latency per concurrency, and the best
requests/s whose p99 is <= 100 ms. Every model uses ``$PAIRFLOW_BENCH_SERVE_THREADS``
(default 2) intra-op threads for mlflow serve; pairflow uses its default (CPUs - 1).
Scale: ``$PAIRFLOW_BENCH_SERVE_SECONDS`` per level (default 3).
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from bench.common import write_result
from pairflow.models.scratch import save_untrained_clip
from pairflow.parallel import available_cpus

STAGE = "serve"

SLO_S = 0.100
LEVELS = (1, 2, 4, 8, 16, 32)
CAPTIONS = [
    "one small red circle at the top left",
    "two big blue squares in the centre",
    "a green triangle on the right",
    "three yellow stars at the bottom",
]

PYFUNC_CODE = '''
"""models-from-code pyfunc: score image-caption pairs with a CLIP directory artifact."""
import base64
import io

import mlflow
import numpy as np
import pandas as pd
import torch
from PIL import Image
from transformers import CLIPModel, CLIPProcessor


class ClipScorer(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        torch.set_num_threads({threads})
        path = context.artifacts["clip"]
        self.model = CLIPModel.from_pretrained(path, use_safetensors=True).eval()
        self.processor = CLIPProcessor.from_pretrained(path)

    def predict(self, context, model_input, params=None):
        images = [
            Image.open(io.BytesIO(base64.b64decode(b))).convert("RGB")
            for b in model_input["image"]
        ]
        captions = [str(c) for c in model_input["caption"]]
        pixels = self.processor.image_processor(images=images, return_tensors="pt")
        tokens = self.processor.tokenizer(
            captions, padding=True, truncation=True, max_length=77, return_tensors="pt"
        )
        with torch.inference_mode():
            img = self.model.get_image_features(pixel_values=pixels["pixel_values"])
            txt = self.model.get_text_features(
                input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]
            )
        img = img if isinstance(img, torch.Tensor) else img.pooler_output
        txt = txt if isinstance(txt, torch.Tensor) else txt.pooler_output
        img = torch.nn.functional.normalize(img, dim=-1)
        txt = torch.nn.functional.normalize(txt, dim=-1)
        return pd.DataFrame({{"score": (img * txt).sum(-1).numpy().astype(np.float64)}})


mlflow.models.set_model(ClipScorer())
'''


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _payloads(n: int = 16) -> list[tuple[str, str]]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        pixels = rng.integers(0, 255, size=(64, 64, 3), dtype=np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        out.append((base64.b64encode(buf.getvalue()).decode(), CAPTIONS[i % len(CAPTIONS)]))
    return out


def _pairflow_body(image: str, caption: str) -> dict[str, Any]:
    return {"instances": [{"image": image, "caption": caption}]}


def _mlflow_body(image: str, caption: str) -> dict[str, Any]:
    return {"dataframe_split": {"columns": ["image", "caption"], "data": [[image, caption]]}}


async def _level(
    url: str, bodies: list[dict[str, Any]], concurrency: int, seconds: float
) -> dict[str, float]:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:

        async def worker(k: int) -> None:
            nonlocal errors
            i = k
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                r = await client.post(url, json=bodies[i % len(bodies)])
                if r.status_code != 200:
                    errors += 1
                latencies.append(time.perf_counter() - t0)
                i += concurrency

        start = time.perf_counter()
        await asyncio.gather(*(worker(k) for k in range(concurrency)))
        wall = time.perf_counter() - start
    lat = np.asarray(latencies)
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / wall,
        "p50_ms": float(np.percentile(lat, 50) * 1000),
        "p99_ms": float(np.percentile(lat, 99) * 1000),
    }


def _wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before ready")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def _measure(
    name: str,
    cmd: list[str],
    ready_url: str,
    url: str,
    bodies: list[dict[str, Any]],
    seconds: float,
    env: dict[str, str],
) -> dict[str, Any]:
    print(f"[serve bench] {name}: starting", flush=True)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        _wait_ready(ready_url, proc)
        asyncio.run(_level(url, bodies, 2, 1.0))  # warm connections and code paths
        levels = []
        for c in LEVELS:
            stats = asyncio.run(_level(url, bodies, c, seconds))
            print(
                f"[serve bench] {name}: c={c} {stats['rps']:.0f} req/s "
                f"p99 {stats['p99_ms']:.0f} ms errors {stats['errors']}",
                flush=True,
            )
            levels.append(stats)
            if stats["p99_ms"] > 4 * SLO_S * 1000:
                break  # far past the SLO: more clients only add queueing
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    ok = [lv for lv in levels if lv["p99_ms"] <= SLO_S * 1000 and lv["errors"] == 0]
    best = max(ok, key=lambda lv: lv["rps"]) if ok else None
    return {
        "levels": levels,
        "rps_at_p99_slo": best["rps"] if best else 0.0,
        "concurrency_at_best": best["concurrency"] if best else None,
    }


def main() -> None:
    seconds = float(os.environ.get("PAIRFLOW_BENCH_SERVE_SECONDS", "3"))
    threads = int(os.environ.get("PAIRFLOW_BENCH_SERVE_THREADS", "2"))
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    # mlflow serve execs `uvicorn` by name: the venv's bin must be on PATH
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    payloads = _payloads()
    tmp = Path(tempfile.mkdtemp(prefix="pairflow-bench-serve-"))
    try:
        clip = save_untrained_clip(tmp / "clip", CAPTIONS * 8, seed=0)
        code = tmp / "clip_scorer.py"
        code.write_text(textwrap.dedent(PYFUNC_CODE.format(threads=threads)))
        import mlflow

        mlflow.pyfunc.save_model(
            path=str(tmp / "pyfunc"), python_model=str(code), artifacts={"clip": str(clip)}
        )
        results: dict[str, Any] = {}
        for name, batching in (("pairflow_batched", True), ("pairflow_unbatched", False)):
            port = _free_port()
            cmd = [
                sys.executable, "-m", "pairflow.cli", "serve", "--model", str(clip),
                "--port", str(port), "--name", "clip",
                "--set", f"serve.batching={str(batching).lower()}",
            ]  # fmt: skip
            base = f"http://127.0.0.1:{port}"
            results[name] = _measure(
                name,
                cmd,
                f"{base}/v2/models/clip/ready",
                f"{base}/v1/models/clip:predict",
                [_pairflow_body(*p) for p in payloads],
                seconds,
                env,
            )
        port = _free_port()
        mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        cmd = [
            mlflow_bin, "models", "serve", "-m", str(tmp / "pyfunc"), "--env-manager", "local",
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ]  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        results["mlflow_serve"] = _measure(
            "mlflow_serve",
            cmd,
            f"{base}/ping",
            f"{base}/invocations",
            [_mlflow_body(*p) for p in payloads],
            seconds,
            env,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio(a: str, b: str) -> float | None:
        den = results[b]["rps_at_p99_slo"]
        return results[a]["rps_at_p99_slo"] / den if den else None

    payload = {
        "slo_p99_ms": SLO_S * 1000,
        "seconds_per_level": seconds,
        "threads": threads,
        "cpus": available_cpus(),
        "model": "tiny CLIP (64 px, width 64, 2+2 layers), one pair per request",
        "servers": results,
        "batched_vs_unbatched": ratio("pairflow_batched", "pairflow_unbatched"),
        "batched_vs_mlflow_serve": ratio("pairflow_batched", "mlflow_serve"),
        "unbatched_vs_mlflow_serve": ratio("pairflow_unbatched", "mlflow_serve"),
        "goal_batched_vs_mlflow_serve": 3.0,
    }
    out = write_result("serve", payload)
    for key in ("batched_vs_unbatched", "batched_vs_mlflow_serve"):
        print(f"[serve bench] {key}: {payload[key]}")
    print(f"[serve bench] wrote {out}")


if __name__ == "__main__":
    main()
