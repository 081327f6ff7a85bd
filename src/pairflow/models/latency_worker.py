"""Latency of saved variants, measured in a fresh process: ``python -m
pairflow.models.latency_worker SPEC.json``.

Why a separate process: torch's OpenMP pool reads its wait policy when torch is imported. By
default its worker threads spin between parallel regions; on a 2-core machine with other load
(or with ONNX Runtime sessions timed interleaved in the same process) a spinning or descheduled
worker stalls every one of the ~100 small parallel regions of a CLIP forward: batch-1 latency
went from ~2-10 ms to 300-750 ms, making "int8 vs fp32 torch" speedups meaningless. ONNX
Runtime sessions here are created without spinning (``session.intra_op.allow_spinning=0``);
the worker gives torch the equivalent (``OMP_WAIT_POLICY=PASSIVE``) and the same thread count
(``OMP_NUM_THREADS`` / ``torch.set_num_threads``, one inter-op thread), then times every
variant interleaved on the same inputs.

SPEC.json: ``{"variants": {name: [path, kind]}, "inputs": "<npz with pixels, ids, mask>",
"batch_sizes": [...], "threads": n, "repeats": n, "warmup": n, "out": "<result json>"}``.
The result: ``{"latency": {name: {batch: {p50_ms, p95_ms, pairs_per_s}}}, "setup": {...}}``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    threads = int(spec["threads"])
    # lazy: boto3, botocore, pandas, torch (slow to import); only this path needs it
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    from pairflow.models.latency import HeldOut, measure_latency
    from pairflow.models.variants import open_variant

    data = np.load(spec["inputs"])
    n = len(data["pixels"])
    held = HeldOut([(data["pixels"], data["ids"], data["mask"])], [str(i) for i in range(n)], [], 0)
    runners = {
        name: open_variant(Path(path), kind, threads, name).runner
        for name, (path, kind) in spec["variants"].items()
    }

    def progress(msg: str) -> None:
        print(msg, flush=True)

    latency = measure_latency(
        runners,
        held,
        spec["batch_sizes"],
        threads,
        int(spec["repeats"]),
        warmup=int(spec["warmup"]),
        progress=progress,
    )
    setup = {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", ""),
        "inference_mode": True,
        "warmup_calls": int(spec["warmup"]),
        "interleaved": True,
    }
    Path(spec["out"]).write_text(json.dumps({"latency": latency, "setup": setup}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
