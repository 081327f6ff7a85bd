"""Thread map and CPU counting used by the dedupe index."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pairflow.parallel import available_cpus, cgroup_cpu_limit, resolve_threads, thread_map


def test_thread_map_keeps_input_order_and_uses_threads() -> None:
    seen: set[int] = set()

    def work(x: int) -> int:
        time.sleep(0.02 * (5 - x))  # later items finish first
        seen.add(threading.get_ident())
        return x * x

    assert thread_map(work, range(5), threads=3) == [0, 1, 4, 9, 16]
    assert len(seen) > 1
    seen.clear()
    assert thread_map(work, [2, 3], threads=1) == [4, 9]
    assert seen == {threading.get_ident()}  # one thread: runs inline


def test_resolve_threads() -> None:
    assert resolve_threads(3) == 3
    assert resolve_threads(0) == available_cpus() >= 1
    with pytest.raises(ValueError, match="threads must be >= 0"):
        resolve_threads(-1)


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 2),
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),
        ({"cpu.max": "garbage"}, None),
        ({}, None),
    ],
)
def test_cgroup_cpu_limit(tmp_path: Path, files: dict[str, str], expected: int | None) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert cgroup_cpu_limit(tmp_path) == expected
