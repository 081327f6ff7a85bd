"""``pairflow.models``: one entry (``open_model``) for every model format, and torch-free
file-layout constants that nobody copies."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from pairflow.models import formats
from pairflow.models.errors import ModelLoadError
from pairflow.models.open import open_model

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "pairflow"
# the format readers behind open_model: called inside pairflow.models only
READERS = {"load_clip", "read_clip", "load_trained", "with_head", "load_variant", "open_variant"}
# open_variant of folders compress has just written (before any index exists), to time and
# score their runners on pixel batches: the one specialised path outside models/
READER_CALLERS_OUTSIDE = {("stages/compress/build.py", "open_variant")}


def test_formats_imports_nothing_heavy() -> None:
    code = (
        "import sys, pairflow.models.formats; "
        "heavy = [m for m in ('torch', 'transformers', 'onnxruntime', 'mlflow') "
        "if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_no_module_copies_a_file_layout_constant() -> None:
    names = {v for k, v in vars(formats).items() if k.isupper() and isinstance(v, str)}
    copies = []
    for path in sorted([*SRC.rglob("*.py"), *(ROOT / "bench").glob("*.py")]):
        if path == Path(formats.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and node.value in names:
                copies.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert not copies, "use pairflow.models.formats instead of: " + ", ".join(copies)


def test_only_models_call_the_format_readers() -> None:
    calls = []
    for path in sorted([*SRC.rglob("*.py"), *(ROOT / "bench").glob("*.py")]):
        rel = path.relative_to(SRC).as_posix() if SRC in path.parents else path.name
        if rel.startswith("models/"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.id if isinstance(f, ast.Name) else getattr(f, "attr", "")
                if name in READERS and (rel, name) not in READER_CALLERS_OUTSIDE:
                    calls.append(f"{rel}:{node.lineno} {name}")
    assert not calls, "open models with pairflow.models.open.open_model: " + ", ".join(calls)


def test_bad_references_fail_in_one_line_naming_the_input(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        str(empty): "no config.json",
        "s3:/x": "unknown model reference",
        "models:/only-a-name": "expected models:/NAME@ALIAS or models:/NAME/VERSION",
        "gs://bucket/model": "unsupported model reference scheme",
    }
    for ref, message in cases.items():
        with pytest.raises(ModelLoadError, match=message) as err:
            open_model(ref)
        text = str(err.value)
        assert text.startswith(ref) and "\n" not in text
