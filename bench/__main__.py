"""``python -m bench [NAME...]``: run benchmarks, write JSON under bench/results/."""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import curate, curate_scale, ingest_tar_reads

BENCHMARKS: dict[str, Callable[[], None]] = {
    "ingest_tar_reads": ingest_tar_reads.main,
    "curate": curate.main,
    "curate_scale": curate_scale.main,
}
# `python -m bench STAGE` runs every benchmark of that pipeline stage.
GROUPS: dict[str, list[str]] = {
    "ingest": ["ingest_tar_reads"],
    "curate": ["curate", "curate_scale"],
}


def main(argv: list[str]) -> int:
    names = [n for arg in (argv or list(BENCHMARKS)) for n in GROUPS.get(arg, [arg])]
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
