"""The import contract (``[tool.importlinter]`` in pyproject.toml, DESIGN.md "Layout").

``make test`` runs ``lint-imports`` on the tree; these tests run the same tool and config on
the tree as it is, and on a copy with one deliberate violation per rule, so a contract that
stopped catching anything (a typo in a module name, an ignore that swallows everything) fails
here instead of passing silently.
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "pairflow"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(source_root: Path, tmp: Path, contract: str = "") -> subprocess.CompletedProcess[str]:
    """``lint-imports`` with the repository's contracts (or only ``contract``, an id),
    importing ``pairflow`` from ``source_root`` (a copy, or the real ``src``)."""
    if not LINT_IMPORTS.is_file():
        pytest.fail(f"{LINT_IMPORTS} missing: install the dev extras (import-linter)")
    env = {**os.environ, "PYTHONPATH": str(source_root)}
    return subprocess.run(
        [
            str(LINT_IMPORTS),
            "--no-cache",
            "--no-logo",
            *(["--contract", contract] if contract else []),
            str(ROOT / "pyproject.toml"),
        ],
        cwd=tmp,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _copy_tree(tmp: Path) -> Path:
    """A copy of ``src/pairflow`` (components/ and pipelines/ resolved from their links)."""
    dst = tmp / "src"
    shutil.copytree(PACKAGE, dst / "pairflow", ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _contracts() -> int:
    import tomllib

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return len(data["tool"]["importlinter"]["contracts"])


def test_the_tree_keeps_every_contract(tmp_path: Path) -> None:
    proc = _lint(ROOT / "src", tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert f"Contracts: {_contracts()} kept, 0 broken." in out


# (file to add the import to, the import, the id of the contract that must catch it, what
# its report must name)
VIOLATIONS = [
    (
        "stages/evaluate/gate.py",
        "from pairflow.stages.train import launch as _violation",
        "stages-independent",
        "pairflow.stages.evaluate.gate -> pairflow.stages.train.launch",
    ),
    (
        "models/clip.py",
        "from pairflow.stages.compress import select as _violation",
        "nothing-below-imports-a-stage",
        "pairflow.models.clip -> pairflow.stages.compress.select",
    ),
    (
        "stages/deploy/summary.py",
        "from pairflow import local_run as _violation",
        "stages-below-the-runners",
        "pairflow.stages.deploy.summary -> pairflow.local_run",
    ),
    (
        "data/schema.py",
        "from pairflow.models import formats as _violation",
        "no-cycles",
        "- .data -> .models",
    ),
]


@pytest.mark.parametrize(
    ("target", "line", "contract", "named"), VIOLATIONS, ids=lambda v: str(v)[:24]
)
def test_a_deliberate_violation_breaks_its_contract(
    tmp_path: Path, target: str, line: str, contract: str, named: str
) -> None:
    clean = _lint(ROOT / "src", tmp_path, contract)
    assert clean.returncode == 0 and "1 kept, 0 broken." in clean.stdout, clean.stdout
    src = _copy_tree(tmp_path)
    path = src / "pairflow" / target
    text = path.read_text()
    # after the module docstring and the __future__ import, so the file stays valid
    marker = "from __future__ import annotations\n"
    assert marker in text, f"{target}: no __future__ import to anchor the violation on"
    path.write_text(text.replace(marker, f"{marker}{line}  # deliberate violation\n", 1))
    ast.parse(path.read_text())
    if contract == "no-cycles":
        # a cycle needs the other direction too: models already imports data
        models = (src / "pairflow" / "models").glob("*.py")
        assert any("from pairflow.data" in m.read_text() for m in models)
    proc = _lint(src, tmp_path, contract)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert "Contracts: 0 kept, 1 broken." in out, out
    assert named in out, out


# What a settings module may import: config composes every section, so a settings module that
# imported more would pull it into every `import pairflow.config` (and could close a cycle the
# contracts' config -> settings ignore would hide).
SETTINGS_MAY_IMPORT = {"pairflow.config_fields", "pairflow.kubeflow.names"}


def _settings_modules() -> list[Path]:
    return sorted(PACKAGE.glob("*/settings.py")) + sorted(PACKAGE.glob("stages/*/settings.py"))


def test_settings_modules_are_leaves() -> None:
    found = _settings_modules()
    assert len(found) >= 12, found
    for path in found:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pairflow"):
                for alias in node.names:
                    # `from pairflow.kubeflow import names` imports pairflow.kubeflow.names
                    sub = f"{node.module}.{alias.name}"
                    target = sub if sub in SETTINGS_MAY_IMPORT else str(node.module)
                    assert target in SETTINGS_MAY_IMPORT, f"{path}: imports {target}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("pairflow"), f"{path}: imports {alias.name}"


def test_config_imports_nothing_heavy() -> None:
    code = (
        "import sys, pairflow.config\n"
        "heavy = ('torch', 'transformers', 'mlflow', 'pandas', 'numpy', 'kfp', 'onnxruntime')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip() == "[]", proc.stdout
