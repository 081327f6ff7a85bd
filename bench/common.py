"""Timing helpers and the JSON result format shared by every benchmark."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def time_repeated(
    fn: Callable[[], object], repeats: int = 5, *, warmup: bool = True
) -> dict[str, float]:
    """Wall seconds of ``fn`` over ``repeats`` runs (after a warm-up run): median, min, max."""
    if warmup:
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples)}


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``bench/results/<name>.json`` with machine facts and a timestamp."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    doc = {
        "benchmark": name,
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "processor": platform.machine()},
        **payload,
    }
    out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return out
