"""The torch baseline is timed fairly: latency runs in a fresh process with the configured
threads and non-spinning OpenMP workers, interleaved with ONNX Runtime on the same inputs.

Before this, torch's spinning OpenMP threads on a loaded 2-core machine made a tiny CLIP's
torch eager batch 300-750 ms against ~1-15 ms for the same model in ONNX Runtime (10-600x);
fairly measured the gap is a small factor (eager dispatch overhead), far below the bound
asserted here, so the assertion holds on a busy CI machine yet catches a grossly unfair run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from pairflow.models.clip import load_clip
from pairflow.models.export import export_towers
from pairflow.models.latency import HeldOut, measure_saved_latency
from pairflow.models.scratch import save_untrained_clip

pytestmark = pytest.mark.slow

CAPTIONS = [
    f"a {size} {colour} {shape} in the {where}"
    for size in ("small", "large")
    for colour in ("red", "green", "blue")
    for shape in ("circle", "square", "star")
    for where in ("top left", "center")
]
UNFAIR_FACTOR = 8.0


def test_torch_is_timed_with_its_threads_and_within_a_sane_factor_of_onnx(
    tmp_path: Path,
) -> None:
    torch_dir = save_untrained_clip(tmp_path / "fp32_torch", CAPTIONS, seed=3)
    loaded = load_clip(str(torch_dir), device="cpu")
    enc = loaded.processor.tokenizer(CAPTIONS[:8], padding=True, return_tensors="np")
    size = int(loaded.processor.image_processor.crop_size["height"])
    pixels = np.random.default_rng(0).normal(size=(8, 3, size, size)).astype(np.float32)
    ids = np.asarray(enc["input_ids"], np.int64)
    mask = np.asarray(enc["attention_mask"], np.int64)
    onnx_dir = tmp_path / "fp32_onnx"
    export_towers(
        loaded.model,
        onnx_dir,
        torch.from_numpy(pixels),
        torch.from_numpy(ids),
        torch.from_numpy(mask),
    )
    loaded.processor.save_pretrained(onnx_dir)
    loaded.processor.image_processor.save_pretrained(onnx_dir)
    held = HeldOut([(pixels, ids, mask)], [str(i) for i in range(8)], CAPTIONS[:8], 0)

    seen: list[str] = []
    latency, setup = measure_saved_latency(
        {"fp32_torch": (torch_dir, "torch"), "fp32_onnx": (onnx_dir, "onnx")},
        held,
        [1, 8],
        threads=2,
        repeats=15,
        progress=seen.append,
    )

    assert setup["torch_threads"] == 2 and setup["torch_interop_threads"] == 1
    assert setup["omp_wait_policy"] == "PASSIVE" and setup["inference_mode"] is True
    assert seen == ["latency batch 1: done", "latency batch 8: done"]
    for batch in ("1", "8"):
        t, o = latency["fp32_torch"][batch], latency["fp32_onnx"][batch]
        assert t["p50_ms"] <= t["p95_ms"] and o["p50_ms"] <= o["p95_ms"]
        assert t["p50_ms"] < UNFAIR_FACTOR * o["p50_ms"], (batch, t, o)
