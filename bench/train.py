"""Training throughput: 1 process versus 2 torchrun processes at the same global batch.

Both runs train the tiny CLIP (64 px, width 64, 2 layers per tower) contrastively on the same
synthetic rows for the same epochs through the real entry point (``torchrun -m
pairflow.stages.train``):

- baseline: 1 process, global batch B, ``torch_threads`` = 2 (both cores);
- DDP: 2 processes x B/2 each, 1 thread each (same cores, gradients all-reduced over gloo).

Reported: samples/s of the loop (process start-up excluded), DDP overhead = 1 - ddp/baseline
samples/s, and rank 0's step-time split (data wait, forward, backward, optimizer) per step.
Scale with ``$PAIRFLOW_BENCH_TRAIN_ROWS`` (default 480) and ``$PAIRFLOW_BENCH_TRAIN_EPOCHS`` (2).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from bench.common import write_result
from pairflow.config import load_config
from pairflow.demo.synthetic import generate_dataset
from pairflow.models.scratch import save_untrained_clip
from pairflow.stages.train.launch import WorkerArgs, run_torchrun

STAGE = "train"
GLOBAL_BATCH = 32


def _run(
    root: Path, manifest: Path, base: Path, nproc: int, threads: int, epochs: int
) -> dict[str, Any]:
    cfg = load_config(None, [f"train.epochs={epochs}", f"train.batch_size={GLOBAL_BATCH // nproc}",
                             f"train.torch_threads={threads}", "train.patience=100",
                             "train.checkpoint_every=100000"])  # fmt: skip
    work = root / f"n{nproc}"
    work.mkdir()
    (work / "config.json").write_text(cfg.to_json())
    args = WorkerArgs(
        work / "config.json", str(manifest), work / "model", str(base), None, work / "r.json"
    )
    run_torchrun(nproc, args, on_line=lambda line: None)
    result: dict[str, Any] = json.loads((work / "r.json").read_text())
    steps = max(1, result["steps"])
    return {
        "processes": nproc,
        "per_rank_batch": GLOBAL_BATCH // nproc,
        "threads_per_process": threads,
        "samples_per_s": result["samples_per_s"],
        "steps": result["steps"],
        "step_ms": {k: round(1000 * v / steps, 2) for k, v in result["timings"].items()},
    }


def main() -> None:
    rows = int(os.environ.get("PAIRFLOW_BENCH_TRAIN_ROWS", "480"))
    epochs = int(os.environ.get("PAIRFLOW_BENCH_TRAIN_EPOCHS", "2"))
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        gen = generate_dataset(root / "data", rows, seed=5, defects=False)
        df = pd.read_parquet(gen.manifest)
        df["image"] = [str((gen.manifest.parent / p).resolve()) for p in df["image"]]
        manifest = root / "m.parquet"
        df.to_parquet(manifest)
        base = save_untrained_clip(root / "base", list(df["caption"]))
        single = _run(root, manifest, base, 1, 2, epochs)
        ddp = _run(root, manifest, base, 2, 1, epochs)
    overhead = 1 - ddp["samples_per_s"] / single["samples_per_s"]
    payload = {
        "rows": rows,
        "epochs": epochs,
        "global_batch": GLOBAL_BATCH,
        "baseline_1_process": single,
        "ddp_2_processes": ddp,
        "ddp_speedup": round(ddp["samples_per_s"] / single["samples_per_s"], 3),
        "ddp_overhead": round(overhead, 3),
        "note": "2-core machine; rank 0's step split; samples/s excludes start-up",
    }
    out = write_result("train", payload)
    print(json.dumps(payload, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
