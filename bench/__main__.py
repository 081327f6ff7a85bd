"""``python -m bench [NAME|STAGE...]``: run benchmarks, write JSON under bench/results/.

Every module in bench/ with a ``main()`` and a ``STAGE`` string is a benchmark named after
the module; ``python -m bench STAGE`` runs every benchmark of that pipeline stage.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Callable
from pathlib import Path

import bench


def discover() -> tuple[dict[str, Callable[[], None]], dict[str, list[str]]]:
    """(name -> main, stage -> names) of the benchmark modules in this folder."""
    benchmarks: dict[str, Callable[[], None]] = {}
    groups: dict[str, list[str]] = {}
    for info in sorted(pkgutil.iter_modules([str(Path(bench.__file__).parent)]), key=str):
        if info.name.startswith("_") or info.name == "common":
            continue
        module = importlib.import_module(f"bench.{info.name}")
        stage = getattr(module, "STAGE", None)
        if not (callable(getattr(module, "main", None)) and isinstance(stage, str)):
            continue
        benchmarks[info.name] = module.main
        groups.setdefault(stage, []).append(info.name)
    return benchmarks, groups


def main(argv: list[str]) -> int:
    benchmarks, groups = discover()
    names = [n for arg in (argv or list(benchmarks)) for n in groups.get(arg, [arg])]
    unknown = [n for n in names if n not in benchmarks]
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(benchmarks)}; "
            f"stages: {', '.join(groups)}",
            file=sys.stderr,
        )
        return 2
    for name in names:
        benchmarks[name]()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
