"""Curate at 10k / 100k / 1M manifest rows pointing at a small pool of image files.

Each size runs in a fresh child process so its peak RSS (``ru_maxrss``) is its own:
ingest-style manifest → validate (both cores) → data contract → dedupe.

What this measures: memory and the per-row cost of the manifest, contract and dedupe at
scale -- NOT decode throughput. Rows point at ``POOL`` distinct files, so beyond the first
``POOL`` rows validate serves repeated URIs from its per-process outcome cache (and the OS
page cache); the result says so in ``measures``. Decode throughput on distinct files is
``bench curate`` (every row a different file).
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from bench.common import write_result
from pairflow.data.sources import read_source
from pairflow.demo.synthetic import generate_dataset

STAGE = "curate"

SIZES = (10_000, 100_000, 1_000_000)
POOL = 2_000


def _child(manifest: str, docs: str) -> None:
    from pairflow.config import DedupeConfig, ValidateConfig
    from pairflow.data.schema import read_manifest
    from pairflow.stages.dedupe.merge import dedupe_frame
    from pairflow.stages.validate.contract import run_contract
    from pairflow.stages.validate.rows import validate_frame

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    df = read_manifest(manifest)
    timings["read"] = time.perf_counter() - t0
    t = time.perf_counter()
    cfg = ValidateConfig()
    cfg.contract.max_reject_share = 1.0
    validated = validate_frame(df, cfg)
    timings["validate"] = time.perf_counter() - t
    t = time.perf_counter()
    run_contract(validated.kept, validated.rejected, cfg, Path(docs), raise_on_failure=False)
    timings["contract"] = time.perf_counter() - t
    t = time.perf_counter()
    result = dedupe_frame(validated.kept, DedupeConfig())
    timings["dedupe"] = time.perf_counter() - t
    timings["total"] = time.perf_counter() - t0
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "rows": len(df),
                "kept": len(result.kept),
                "seconds": timings,
                "peak_rss_mb": self_rss / 1024,
                "worker_peak_rss_mb": kids_rss / 1024,
            }
        )
    )


def run() -> dict[str, Any]:
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        gen = generate_dataset(Path(tmp) / "pool", POOL, seed=3)
        pool = read_source(str(gen.manifest), "parquet")
        for size in SIZES:
            reps = -(-size // len(pool))
            big = pd.concat([pool] * reps, ignore_index=True).head(size)
            big["id"] = [f"r{i:07d}" for i in range(size)]
            manifest = Path(tmp) / f"m{size}.parquet"
            big.to_parquet(manifest)
            del big
            proc = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    f"from bench.curate_scale import _child; _child({str(manifest)!r}, "
                    f"{str(Path(tmp) / f'docs{size}')!r})",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            print(
                f"  {size:>9} rows: {row['seconds']['total']:.1f} s, peak RSS "
                f"{row['peak_rss_mb']:.0f} MB (workers {row['worker_peak_rss_mb']:.0f} MB)"
            )
            results.append(row)
    return {
        "pool_images": POOL,
        "measures": (
            f"rows point at {POOL} distinct files: beyond {POOL} rows validate reads repeated "
            "URIs from its per-process outcome cache, so the seconds measure manifest, "
            "contract, dedupe and memory at scale, not image decoding (see bench curate)"
        ),
        "sizes": results,
        "rss_budget_mb": 2048,
    }


def main() -> None:
    out = write_result("curate_scale", run())
    print(f"curate scale → {out}")
