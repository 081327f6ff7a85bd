"""Curate (validate + dedupe) throughput on generated pairs, side by side with baselines.

- pairflow: :func:`validate_frame` (both cores) + :func:`dedupe_frame`.
- naive baseline: per row in a Python loop ``PIL.Image.open`` + ``imagehash.phash``, then
  pandas ``duplicated`` on the hash and on the caption.
- decode-only: read + fully decode every image, on the same worker processes as pairflow:
  the ceiling for anything that looks at every pixel once.

Two scenarios: the issue's 20k pairs of 64 px images, where per-file overheads dominate and
naive is nearly decode-bound, and 4k pairs of 384 px images (photo-sized), where decoding
dominates and validate's DCT-scaled JPEG decode (see ``pairflow.validate.rows``) pays off.
"""

from __future__ import annotations

import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import imagehash
import pandas as pd
from PIL import Image

from bench.common import write_result
from pairflow.config import DedupeConfig, ValidateConfig
from pairflow.data.sources import read_source
from pairflow.data.synthetic import generate_dataset
from pairflow.dedupe.merge import dedupe_frame
from pairflow.parallel import available_cpus
from pairflow.validate.rows import CHUNK_ROWS, validate_frame, worker_count

STAGE = "curate"


def _naive(df: pd.DataFrame) -> int:
    hashes: list[str | None] = []
    for path in df["image"]:
        try:
            with Image.open(path) as img:
                hashes.append(str(imagehash.phash(img)))
        except (OSError, ValueError):
            hashes.append(None)
    out = df.assign(phash=pd.Series(hashes, index=df.index, dtype=object))
    out = out.dropna(subset=["phash"])
    out = out[~out["phash"].duplicated() & ~out["caption"].duplicated()]
    return len(out)


def _decode_chunk(paths: list[str]) -> int:
    done = 0
    for path in paths:
        try:
            with open(path, "rb") as fh, Image.open(fh) as img:
                img.load()
                done += 1
        except (OSError, ValueError):
            continue
    return done


def _decode_only(df: pd.DataFrame, workers: int) -> int:
    paths = df["image"].tolist()
    chunks = [paths[i : i + CHUNK_ROWS] for i in range(0, len(paths), CHUNK_ROWS)]
    with ProcessPoolExecutor(workers) as pool:
        return sum(pool.map(_decode_chunk, chunks))


def _pairflow(df: pd.DataFrame, workers: int) -> dict[str, float]:
    start = time.perf_counter()
    validated = validate_frame(df, ValidateConfig(workers=workers))
    mid = time.perf_counter()
    deduped = dedupe_frame(validated.kept, DedupeConfig())
    end = time.perf_counter()
    near = deduped.metrics.get("near", {})
    return {
        "kept": len(deduped.kept),
        "validate_s": mid - start,
        "dedupe_s": end - mid,
        "near_candidate_pairs": near.get("candidate_pairs", 0),
    }


def _timed(fn: Any, *args: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    value = fn(*args)
    return time.perf_counter() - start, value


def run(n: int = 20_000, image_size: int = 64) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        gen = generate_dataset(Path(tmp) / "data", n, seed=2, image_size=image_size)
        df = read_source(str(gen.manifest), "parquet")
        workers = worker_count(0, len(df))
        _decode_only(df.head(2000), workers)  # warm the page cache for everyone
        t_ours, ours = _timed(_pairflow, df, workers)
        t_decode, decoded = _timed(_decode_only, df, workers)
        t_naive, naive_kept = _timed(_naive, df)
    return {
        "rows": n,
        "image_size": image_size,
        "workers": workers,
        "cpus": available_cpus(),
        "pairflow": {
            "seconds": t_ours,
            "pairs_per_s": n / t_ours,
            **ours,
            "validate_pairs_per_s": n / ours["validate_s"],
        },
        "decode_only": {"seconds": t_decode, "pairs_per_s": n / t_decode, "decoded": decoded},
        "naive_baseline": {"seconds": t_naive, "pairs_per_s": n / t_naive, "kept": naive_kept},
        "speedup_vs_naive": t_naive / t_ours,
        "fraction_of_decode_only_rate": t_decode / t_ours,
        "validate_fraction_of_decode_only_rate": t_decode / ours["validate_s"],
    }


def _line(result: dict[str, Any]) -> str:
    return (
        f"curate {result['rows']} pairs of {result['image_size']} px: pairflow "
        f"{result['pairflow']['pairs_per_s']:.0f}/s, decode-only "
        f"{result['decode_only']['pairs_per_s']:.0f}/s, naive "
        f"{result['naive_baseline']['pairs_per_s']:.0f}/s → {result['speedup_vs_naive']:.2f}x "
        f"naive, {result['fraction_of_decode_only_rate']:.2f} of decode-only"
    )


def main() -> None:
    result = run()
    result["photo_size"] = run(4_000, 384)
    out = write_result("curate", result)
    print(_line(result))
    print(_line(result["photo_size"]), "→", out)
