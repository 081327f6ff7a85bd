"""Imports inside functions are kept for slow imports only, each with a one-line reason.

A function-level import hides a module's dependencies from the reader, from import-linter's
view of the module and from the first import's cost. The library keeps one only where the
import is slow (torch, transformers, mlflow, kfp, kserve, Great Expectations, ...) and only
one path needs it, or where the server's own modules should not load with ``pairflow
--help``; the function says so in a ``# lazy:`` comment above its first such import.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "pairflow"


def _library_files() -> list[Path]:
    skip = {"components", "pipelines"}  # KFP component bodies must import inside the function
    return sorted(
        p
        for p in PACKAGE.rglob("*.py")
        if "__pycache__" not in p.parts and not skip & set(p.relative_to(PACKAGE).parts)
    )


def _unexplained(path: Path, base: Path = PACKAGE) -> list[str]:
    lines = path.read_text().splitlines()
    tree = ast.parse("\n".join(lines))
    missing = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        own = [
            n
            for n in ast.walk(fn)
            if isinstance(n, ast.Import | ast.ImportFrom)
            # imports of nested functions are judged with those functions
            and not any(
                isinstance(inner, ast.FunctionDef | ast.AsyncFunctionDef)
                and inner is not fn
                and inner.lineno <= n.lineno <= (inner.end_lineno or 0)
                for inner in ast.walk(fn)
            )
        ]
        if not own:
            continue
        first = min(n.lineno for n in own)
        before = lines[fn.lineno - 1 : first - 1]
        if not any(line.strip().startswith("# lazy:") for line in before):
            missing.append(f"{path.relative_to(base)}:{first} in {fn.name}()")
    return missing


def test_function_level_imports_say_why() -> None:
    files = _library_files()
    assert len(files) > 150, "the library was not found"
    missing = [m for f in files for m in _unexplained(f)]
    assert not missing, "function-level imports without a `# lazy:` reason:\n" + "\n".join(missing)


def test_the_check_catches_an_unexplained_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "def slow() -> None:\n"
        "    # lazy: torch (slow to import); only this path needs it\n"
        "    import torch\n\n\n"
        "def quick() -> None:\n"
        "    import json\n"
    )
    assert [m.split(" in ")[1] for m in _unexplained(sample, tmp_path)] == ["quick()"]


def test_the_cli_starts_without_the_slow_imports() -> None:
    """`pairflow --help` and every command's parsing load none of the slow packages."""
    code = (
        "import sys, pairflow.cli\n"
        "slow = ('torch', 'transformers', 'mlflow', 'kfp', 'kserve', 'kubernetes', 'pandas',\n"
        "        'onnxruntime', 'sklearn', 'great_expectations', 'evidently', 'boto3')\n"
        "print(sorted(m for m in slow if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "[]", proc.stdout
