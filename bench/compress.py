"""int8 ONNX Runtime vs fp32 torch eager vs fp32 ONNX Runtime at 2 threads, side by side.

The model is a randomly initialised CLIP built from a config (nothing downloaded): by default
ViT-B/32-shaped (224 px, patch 32, 12x768 vision, 12x512 text, 49408-token vocabulary, 512-d
joint space), the size the >= 2.5x speed / >= 3.5x size goals are about; set
``PAIRFLOW_BENCH_COMPRESS_SHAPE=tiny`` for the demo's tiny shape (a quick check). Latency is
one pair request (batch of images + captions through both towers), timed interleaved; the
int8 variants' cosines to fp32 (image and text embeddings) show what quantization costs on
random weights. The bench runs in a child process with torch's OpenMP threads set not to spin
(``pairflow.models.latency.fair_latency_env``, like the ORT sessions' ``allow_spinning=0``):
with spinning threads on a loaded 2-core machine torch eager measured 100-600x slower than
ORT, an artefact, not the model. ``int8_onnx`` uses the default ``compress.int8_op_types``
(MatMul, Gemm and Gather: the token embedding table is stored int8); ``int8_onnx_matmul``
quantizes MatMul/Gemm only, for comparison.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import write_result
from pairflow.models.export import export_towers
from pairflow.models.formats import TEXT_FILE, VISION_FILE
from pairflow.models.latency import HeldOut, fair_latency_env, measure_latency
from pairflow.models.runners import ClipRunner, OrtClip, TorchClip
from pairflow.stages.compress.quantize import quantize_dynamic_file
from pairflow.stages.compress.settings import CompressConfig

STAGE = "compress"

SHAPES: dict[str, dict[str, Any]] = {
    "vit-b32": {
        "image": 224,
        "patch": 32,
        "vision": (768, 12, 12, 3072),
        "text": (512, 12, 8, 2048),
        "vocab": 49408,
        "proj": 512,
        "batches": [1, 8],
    },
    "tiny": {
        "image": 64,
        "patch": 8,
        "vision": (64, 2, 4, 256),
        "text": (64, 2, 4, 256),
        "vocab": 600,
        "proj": 64,
        "batches": [1, 32],
    },
}


def build(shape: dict[str, Any]) -> Any:
    from transformers import CLIPConfig, CLIPModel

    def tower(dims: tuple[int, int, int, int]) -> dict[str, int]:
        h, layers, heads, inter = dims
        return {
            "hidden_size": h,
            "num_hidden_layers": layers,
            "num_attention_heads": heads,
            "intermediate_size": inter,
        }

    cfg = CLIPConfig(
        text_config={**tower(shape["text"]), "vocab_size": shape["vocab"]},
        vision_config={
            **tower(shape["vision"]),
            "image_size": shape["image"],
            "patch_size": shape["patch"],
        },
        projection_dim=shape["proj"],
    )
    torch.manual_seed(0)
    model = CLIPModel(cfg)
    model.train(False)
    return model


THREADS = 2


def main() -> None:
    """Run :func:`run` in a child process with the fair thread environment (see above)."""
    if os.environ.get("OMP_WAIT_POLICY") == "PASSIVE":
        run()
        return
    root = Path(__file__).resolve().parent.parent
    cmd = [sys.executable, "-c", "import bench.compress as b; b.run()"]
    subprocess.run(cmd, env=fair_latency_env(THREADS), cwd=root, check=True)


def run() -> None:
    torch.set_num_threads(THREADS)
    torch.set_num_interop_threads(1)
    name = os.environ.get("PAIRFLOW_BENCH_COMPRESS_SHAPE", "vit-b32")
    shape = SHAPES[name]
    model = build(shape)
    rng = np.random.default_rng(0)
    n = max(shape["batches"])
    pixels = rng.normal(size=(n, 3, shape["image"], shape["image"])).astype(np.float32)
    ids = rng.integers(1, shape["vocab"] - 1, size=(n, 16)).astype(np.int64)
    ids[:, -1] = shape["vocab"] - 1
    mask = np.ones_like(ids)
    held = HeldOut([(pixels, ids, mask)], [str(i) for i in range(n)], ["x"] * n, 0)
    with tempfile.TemporaryDirectory(prefix="pairflow-bench-compress-") as tmp:
        fp32 = Path(tmp) / "fp32"
        int8 = {"int8_onnx": Path(tmp) / "int8", "int8_onnx_matmul": Path(tmp) / "int8mm"}
        ops = {"int8_onnx": CompressConfig().int8_op_types, "int8_onnx_matmul": ["MatMul", "Gemm"]}
        export_towers(
            model, fp32, torch.from_numpy(pixels), torch.from_numpy(ids), torch.from_numpy(mask)
        )
        for v, d in int8.items():
            for f in (VISION_FILE, TEXT_FILE):
                quantize_dynamic_file(fp32 / f, d / f, ops[v])
        runners: dict[str, ClipRunner] = {
            "fp32_torch": TorchClip(model),
            "fp32_onnx": OrtClip(fp32 / VISION_FILE, fp32 / TEXT_FILE, THREADS),
            **{v: OrtClip(d / VISION_FILE, d / TEXT_FILE, THREADS) for v, d in int8.items()},
        }
        lat = measure_latency(
            runners, held, shape["batches"], threads=THREADS, repeats=10, warmup=2
        )
        torch_bytes = sum(p.numel() * 4 for p in model.parameters())
        sizes = {
            "fp32_torch": torch_bytes,
            "fp32_onnx": sum((fp32 / f).stat().st_size for f in (VISION_FILE, TEXT_FILE)),
            **{
                v: sum((d / f).stat().st_size for f in (VISION_FILE, TEXT_FILE))
                for v, d in int8.items()
            },
        }
        ref_i = runners["fp32_torch"].embed_images(pixels)
        ref_t = runners["fp32_torch"].embed_texts(ids, mask)
        cosines = {
            v: {
                "image_min": round(
                    float(np.min(np.sum(runners[v].embed_images(pixels) * ref_i, 1))), 5
                ),
                "text_min": round(
                    float(np.min(np.sum(runners[v].embed_texts(ids, mask) * ref_t, 1))), 5
                ),
            }
            for v in int8
        }
    base = lat["fp32_torch"]
    onnx = lat["fp32_onnx"]
    payload = {
        "shape": name,
        "threads": THREADS,
        "torch_setup": {
            "intra_op_threads": torch.get_num_threads(),
            "interop_threads": torch.get_num_interop_threads(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
            "inference_mode": True,
        },
        "note": "variants timed interleaved (warm-up calls first), compare ratios",
        "latency_ms": lat,
        "size_bytes": sizes,
        "speedup_vs_fp32_torch": {
            v: {b: round(base[b]["p50_ms"] / lat[v][b]["p50_ms"], 3) for b in base} for v in lat
        },
        "size_ratio_vs_fp32_torch": {v: round(torch_bytes / s, 3) for v, s in sizes.items()},
        # the fairer baseline for int8 ONNX: the same runtime at fp32
        "speedup_vs_fp32_onnx": {
            v: {b: round(onnx[b]["p50_ms"] / lat[v][b]["p50_ms"], 3) for b in onnx} for v in lat
        },
        "size_ratio_vs_fp32_onnx": {v: round(sizes["fp32_onnx"] / s, 3) for v, s in sizes.items()},
        "int8_op_types": ops,
        "int8_min_cosine_vs_fp32": cosines,
    }
    out = write_result(f"compress_{name}", payload)
    print(f"wrote {out}")
    print(payload["speedup_vs_fp32_torch"], payload["size_ratio_vs_fp32_torch"])
    print("vs fp32 ONNX:", payload["speedup_vs_fp32_onnx"], payload["size_ratio_vs_fp32_onnx"])


if __name__ == "__main__":
    main()
