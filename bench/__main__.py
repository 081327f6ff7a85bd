"""``python -m bench [NAME...]``: run benchmarks, write JSON under bench/results/."""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import ingest_tar_reads

BENCHMARKS: dict[str, Callable[[], None]] = {
    "ingest_tar_reads": ingest_tar_reads.main,
}


def main(argv: list[str]) -> int:
    names = argv or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}",
            file=sys.stderr,
        )
        return 2
    for name in names:
        BENCHMARKS[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
