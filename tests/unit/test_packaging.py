"""The distribution lists every package, so a wheel holds what an editable install imports."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_every_package_is_listed() -> None:
    setuptools = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    mapped = {k: v for k, v in setuptools["package-dir"].items() if k}
    found = set()
    for init in (REPO / "src" / "pairflow").rglob("__init__.py"):
        rel = init.parent.relative_to(REPO / "src")
        if not any(str(rel).startswith(f"pairflow/{m.split('.')[-1]}") for m in mapped):
            found.add(".".join(rel.parts))
    for name, folder in mapped.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join((name, *rel.parts)) if rel.parts else name)
    assert found == listed
