"""CLIP filter throughput on demo pairs, side by side with a naive loop and the model alone.

- pairflow: :func:`score_frame` (DataLoader workers read, decode and preprocess batches while
  the main process runs the model as concurrent single-threaded streams; defaults: batch 64,
  2 workers, model threads = CPUs).
- pairflow without workers (``num_workers=0``): decoding in the main thread while the
  model streams run; on very few cores this can beat worker processes.
- naive baseline: one pair at a time in the main process: read, decode, processor, both
  towers at batch size 1 (torch's default threads).
- forward-only: the two towers alone on preprocessed tensors already in memory, same batch
  size and CPUs, run both as the scorer runs them (concurrent streams) and as one stream with
  every CPU as intra-op threads; the faster is the ceiling for any scorer of this model.

The model is the demo's tiny reference architecture (64 px, patch 8, width 64, 2 layers per
tower). Throughput does not depend on the weights, so a fresh random one is used unless
``$PAIRFLOW_BENCH_CLIP_MODEL`` names a model directory (e.g. the pretrained demo model).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from bench.common import write_result
from pairflow.clipfilter.bootstrap import save_untrained_clip
from pairflow.clipfilter.model import LoadedClip, load_clip
from pairflow.clipfilter.scoring import (
    Batch,
    Collate,
    PairDataset,
    embed_batch,
    features,
    plan_streams,
    plan_threads,
    score_frame,
    torch_threads,
)
from pairflow.config import ClipFilterConfig
from pairflow.data.decode import decode_image
from pairflow.data.imageio import read_image_bytes
from pairflow.data.sources import read_source
from pairflow.data.synthetic import generate_dataset

STAGE = "filter"

REPEATS = 3


def _rate(fn: Callable[[], int], repeats: int = REPEATS) -> dict[str, float]:
    """Pairs/s of ``fn`` (which returns pairs done): median and best of ``repeats`` runs."""
    fn()  # warm-up: page cache, allocator, lazy init
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        done = fn()
        rates.append(done / (time.perf_counter() - start))
    return {"pairs_per_s": statistics.median(rates), "best_pairs_per_s": max(rates)}


def _naive(df: pd.DataFrame, loaded: LoadedClip) -> int:
    proc, model = loaded.processor, loaded.model
    done = 0
    with torch.inference_mode():
        for uri, caption in zip(df["image"], df["caption"], strict=True):
            image = decode_image(read_image_bytes(str(uri))).image
            pixels = proc.image_processor(images=[image], return_tensors="pt")["pixel_values"]
            tok = proc.tokenizer([str(caption)], return_tensors="pt")
            img = F.normalize(features(model.get_image_features(pixel_values=pixels)), dim=-1)
            txt = F.normalize(
                features(
                    model.get_text_features(
                        input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
                    )
                ),
                dim=-1,
            )
            float((img * txt).sum())
            done += 1
    return done


def _preloaded(df: pd.DataFrame, loaded: LoadedClip, batch_size: int) -> list[Batch]:
    dataset = PairDataset(df["image"].tolist(), df["caption"].tolist())
    collate = Collate(loaded.processor, loaded.max_text_length)
    items = [dataset[i] for i in range(len(dataset))]
    return [collate(items[i : i + batch_size]) for i in range(0, len(items), batch_size)]


def _forward_only(batches: list[Batch], loaded: LoadedClip, streams: int, intra: int) -> int:
    def one(batch: Batch) -> None:
        img, txt = embed_batch(loaded, batch)
        (img * txt).sum(-1)

    with torch_threads(intra), ThreadPoolExecutor(streams) as pool:
        list(pool.map(one, batches))
    return sum(len(b.indices) for b in batches)


def run(n: int = 2000, naive_n: int = 500) -> dict[str, Any]:
    cfg = ClipFilterConfig()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    with tempfile.TemporaryDirectory() as tmp:
        gen = generate_dataset(Path(tmp) / "data", n, seed=7, defects=False)
        df = read_source(str(gen.manifest), "parquet")
        model_dir = os.environ.get("PAIRFLOW_BENCH_CLIP_MODEL") or str(
            save_untrained_clip(Path(tmp) / "clip", [str(c) for c in df["caption"]])
        )
        loaded = load_clip(model_dir, device="cpu")
        workers, threads = plan_threads(cfg, n)
        ours = _rate(lambda: int(score_frame(df, loaded, cfg).scored.sum()))
        inline_cfg = cfg.model_copy(update={"num_workers": 0})
        inline = _rate(lambda: int(score_frame(df, loaded, inline_cfg).scored.sum()))
        naive = _rate(lambda: _naive(df.head(naive_n), loaded), repeats=1)
        batches = _preloaded(df, loaded, cfg.batch_size)
        streams, intra = plan_streams(threads, loaded.device)
        fwd_streams = _rate(lambda: _forward_only(batches, loaded, streams, intra))
        fwd_intra = _rate(lambda: _forward_only(batches, loaded, 1, threads))
    return {
        "rows": n,
        "naive_rows": naive_n,
        "cpus": cpus,
        "batch_size": cfg.batch_size,
        "workers": workers,
        "torch_threads": threads,
        "model": "env PAIRFLOW_BENCH_CLIP_MODEL"
        if os.environ.get("PAIRFLOW_BENCH_CLIP_MODEL")
        else "demo architecture, random weights",
        "pairflow": ours,
        "pairflow_no_workers": inline,
        "naive_baseline": naive,
        "forward_only": {**fwd_streams, "streams": streams, "intra_op_threads": intra},
        "forward_only_one_stream": {**fwd_intra, "streams": 1, "intra_op_threads": threads},
        "speedup_vs_naive": ours["pairs_per_s"] / naive["pairs_per_s"],
        # against the faster of the two ways to run the model alone on these CPUs
        "fraction_of_forward_only": ours["pairs_per_s"]
        / max(fwd_streams["pairs_per_s"], fwd_intra["pairs_per_s"]),
    }


def main() -> None:
    result = run()
    out = write_result("filter", result)
    print(
        f"clip filter {result['rows']} pairs: pairflow {result['pairflow']['pairs_per_s']:.0f}/s "
        f"({result['pairflow_no_workers']['pairs_per_s']:.0f}/s without workers), "
        f"naive {result['naive_baseline']['pairs_per_s']:.0f}/s, forward-only "
        f"{result['forward_only']['pairs_per_s']:.0f}/s "
        f"(one stream: {result['forward_only_one_stream']['pairs_per_s']:.0f}/s) → "
        f"{result['speedup_vs_naive']:.1f}x naive, {result['fraction_of_forward_only']:.2f} of "
        f"forward-only → {out}"
    )


if __name__ == "__main__":
    main()
