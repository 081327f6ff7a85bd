"""Bad input reaches the user as one line naming the file/key and the problem, exit code 2."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

PAIRFLOW = [sys.executable, "-m", "pairflow.cli"]


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PAIRFLOW, *args], capture_output=True, text=True, cwd=cwd, timeout=300, check=False
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_manifest(tmp_path: Path) -> None:
    missing = tmp_path / "nope.parquet"
    proc = _run("ingest", "--input", str(missing), "--out", str(tmp_path / "o"))
    _assert_one_line_error(proc, str(missing))


def test_unreadable_parquet(tmp_path: Path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    proc = _run("ingest", "--input", str(bad), "--out", str(tmp_path / "o"))
    _assert_one_line_error(proc, str(bad), "unreadable Parquet")


def test_missing_required_columns(tmp_path: Path) -> None:
    path = tmp_path / "m.parquet"
    pd.DataFrame({"id": ["a"], "img": ["x.png"]}).to_parquet(path)
    proc = _run("ingest", "--input", str(path), "--out", str(tmp_path / "o"))
    _assert_one_line_error(proc, str(path), "image", "caption")


def test_unknown_config_key_and_bad_set(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  epoks: 3\n")
    _assert_one_line_error(_run("config", "show", "--config", str(cfg)), str(cfg), "train.epoks")
    _assert_one_line_error(_run("config", "show", "--set", "train.epochs"), "train.epochs")


def test_unwritable_output_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    proc = _run("data", "generate", "--out", str(blocker / "sub"), "--n", "5")
    _assert_one_line_error(proc, str(blocker / "sub"), "cannot create")


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = _run(
        "--debug", "ingest", "--input", str(tmp_path / "x.parquet"), "--out", str(tmp_path / "o")
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_data_generate_is_byte_identical(tmp_path: Path) -> None:
    for name in ("a", "b"):
        proc = _run("data", "generate", "--out", str(tmp_path / name), "--n", "60", "--seed", "5")
        assert proc.returncode == 0, proc.stderr
    first, second = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert first == second
    assert {"manifest.parquet", "ground_truth.parquet"} <= set(first)
    gt = pd.read_parquet(tmp_path / "a" / "ground_truth.parquet")
    assert len(gt) == round(60 * 0.25)


@pytest.mark.parametrize("flag", ["--no-defects"])
def test_data_generate_without_defects(tmp_path: Path, flag: str) -> None:
    proc = _run("data", "generate", "--out", str(tmp_path), "--n", "30", flag)
    assert proc.returncode == 0, proc.stderr
    assert pd.read_parquet(tmp_path / "ground_truth.parquet").empty


@pytest.mark.slow
def test_failed_pipeline_run_exits_non_zero(tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    pd.DataFrame({"id": ["a"], "caption": ["a red circle"]}).to_parquet(broken)
    proc = _run("run", "--set", f"data.source={broken}", "--set", f"run.workdir={tmp_path / 'w'}")
    assert proc.returncode == 1, proc.stdout[-2000:]
    assert "FAILED" in proc.stdout
