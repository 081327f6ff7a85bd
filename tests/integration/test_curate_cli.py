"""Standalone curate commands: validate → dedupe → filter on generated data, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from pairflow.cli import app
from pairflow.config import DataConfig
from pairflow.demo.synthetic import GenerateSummary
from pairflow.report import StageOutputs
from pairflow.stages.ingest.ingest import run_ingest


def _report(out: Path) -> dict[str, object]:
    rep: dict[str, object] = json.loads((out / "report.json").read_text())
    kept = pd.read_parquet(out / "kept.parquet")
    rejected = pd.read_parquet(out / "rejected.parquet")
    assert rep["rows_out"] == len(kept)
    assert rep["rows_in"] == len(kept) + len(rejected)
    return rep


def test_validate_dedupe_filter_chain(
    tmp_path: Path, small_dataset: GenerateSummary, untrained_clip: Path
) -> None:
    runner = CliRunner()
    ingested = tmp_path / "ingest"
    run_ingest(str(small_dataset.manifest), StageOutputs.in_dir(ingested), DataConfig())
    truth = pd.read_parquet(small_dataset.ground_truth)

    res = runner.invoke(
        app, ["validate", "--input", str(ingested / "kept.parquet"), "--out", str(tmp_path / "v")]
    )
    assert res.exit_code == 0, res.output
    rep = _report(tmp_path / "v")
    assert rep["rejected"]["missing_file"] >= 1  # type: ignore[index]
    assert (tmp_path / "v" / "data_docs").is_dir()
    rejected = pd.read_parquet(tmp_path / "v" / "rejected.parquet")
    corrupt = set(
        truth.loc[truth["kind"].isin(["corrupt_file", "zero_byte_file", "not_an_image"]), "id"]
    )
    assert corrupt <= set(rejected["id"])

    res = runner.invoke(
        app,
        ["dedupe", "--input", str(tmp_path / "v" / "kept.parquet"), "--out", str(tmp_path / "d")],
    )
    assert res.exit_code == 0, res.output
    rep = _report(tmp_path / "d")
    assert rep["rejected"]["exact_duplicate"] >= 1  # type: ignore[index]

    res = runner.invoke(
        app,
        [
            "filter",
            "--input", str(tmp_path / "d" / "kept.parquet"),
            "--out", str(tmp_path / "f"),
            "--model", str(untrained_clip),
            "--top-fraction", "0.5",
            "--ground-truth", str(small_dataset.ground_truth),
        ],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rep = _report(tmp_path / "f")
    kept = pd.read_parquet(tmp_path / "f" / "kept.parquet")
    scored = rep["rows_in"]
    assert abs(len(kept) - 0.5 * scored) <= 1  # type: ignore[operator]
    rejected = pd.read_parquet(tmp_path / "f" / "rejected.parquet")
    assert set(rejected["reason"]) == {"clip_score_below_threshold"}
    assert kept["clip_score"].min() >= rejected["clip_score"].max()
    assert (tmp_path / "f" / "embeddings.parquet").is_file()
    assert "<svg" in (tmp_path / "f" / "score_histogram.html").read_text()


def test_filter_without_model_is_a_one_line_error(
    tmp_path: Path, small_dataset: GenerateSummary
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pairflow.cli", "filter", "--input", str(small_dataset.manifest),
         "--out", str(tmp_path / "f")],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "--model" in proc.stderr and "Traceback" not in proc.stderr
