"""CPU counting and an order-preserving thread map for numpy-heavy work.

numpy releases the GIL inside large array operations, so chunks of vectorised work (the
near-duplicate index, layout verification) run on several cores from plain threads without
pickling anything to worker processes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cpu_limit(root: Path = CGROUP_ROOT) -> int | None:
    """CPUs allowed by a cgroup CPU quota (a container's ``limits.cpu``), rounded up, or
    None without a quota. Reads cgroup v2 ``cpu.max``, else v1 ``cpu.cfs_quota_us``."""
    try:
        v2 = root / "cpu.max"
        if v2.is_file():
            quota, _, period = v2.read_text().strip().partition(" ")
            if quota == "max":
                return None
            return max(1, math.ceil(int(quota) / int(period or "100000")))
        v1 = root / "cpu" / "cpu.cfs_quota_us"
        if v1.is_file():
            q = int(v1.read_text().strip())
            if q <= 0:
                return None
            return max(1, math.ceil(q / int((root / "cpu" / "cpu.cfs_period_us").read_text())))
    except (OSError, ValueError):
        return None  # unreadable or unexpected: no quota known, affinity decides
    return None


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (on
    Kubernetes the affinity mask lists the node's CPUs, the quota is the pod's limit)."""
    affinity = hasattr(os, "sched_getaffinity")
    cpus = len(os.sched_getaffinity(0)) if affinity else (os.cpu_count() or 1)
    limit = cgroup_cpu_limit()
    return max(1, min(cpus, limit) if limit else cpus)


def resolve_threads(requested: int) -> int:
    """``requested`` threads, or every available CPU for 0."""
    if requested < 0:
        raise ValueError(f"threads must be >= 0, got {requested}")
    return requested or available_cpus()


def thread_map(fn: Callable[[T], R], items: Iterable[T], threads: int) -> list[R]:
    """``[fn(x) for x in items]``, on up to ``threads`` threads; results in input order."""
    todo = list(items)
    if threads <= 1 or len(todo) <= 1:
        return [fn(x) for x in todo]
    with ThreadPoolExecutor(min(threads, len(todo))) as pool:
        return list(pool.map(fn, todo))
