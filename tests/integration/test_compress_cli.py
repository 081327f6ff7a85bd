"""``pairflow compress``: the CLI writes the variants, index, table and a conserved report;
bad input exits with code 2 and one line naming the problem (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pairflow.data.schema import read_manifest, write_manifest
from pairflow.data.sources import read_source
from pairflow.demo.synthetic import generate_dataset
from pairflow.models.scratch import save_untrained_clip

pytestmark = pytest.mark.slow

CLI = [sys.executable, "-c", "from pairflow.cli import main; main()"]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("compress-cli")
    gen = generate_dataset(root / "data", 48, seed=3, defects=False)
    df = read_source(str(gen.manifest), "parquet")
    write_manifest(df, root / "in.parquet")
    model = save_untrained_clip(root / "model", [str(c) for c in df["caption"]], seed=1)
    return root / "in.parquet", model


def test_compress_cli_writes_variants_index_and_report(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    from pairflow.cli import app

    manifest, model = inputs
    sets = [
        "compress.int8=false",
        "compress.latency_repeats=3",
        "compress.latency_batch_sizes=[1, 4]",
        "compress.selection_batch_size=4",
        "data.split.holdout_fraction=0.3",
    ]
    args = ["compress", "--model", str(model), "--input", str(manifest), "--out", str(tmp_path)]
    for s in sets:
        args += ["--set", s]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "compressed" / "variants.json").read_text())
    assert [v["name"] for v in index["variants"]] == ["fp32_torch", "fp32_onnx"]
    assert (tmp_path / "compressed" / "fp32_onnx" / "vision.onnx").is_file()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rows_in"] == report["rows_out"] == len(read_manifest(manifest))
    assert report["metrics"]["chosen"] == index["chosen"]
    assert "compress: variants" in result.output  # the table is printed


def test_compress_cli_bad_model_exits_2_naming_it(
    inputs: tuple[Path, Path], tmp_path: Path
) -> None:
    manifest, _ = inputs
    missing = tmp_path / "no-such-model"
    args = ["compress", "--model", str(missing), "--input", str(manifest), "--out", str(tmp_path)]
    proc = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "no-such-model" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "report.json").exists()
