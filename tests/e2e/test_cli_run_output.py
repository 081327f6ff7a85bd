"""What a person sees from ``pairflow run``: one status line per step, not the executors' logs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pairflow.config import load_config
from pairflow.demo.synthetic import GenerateSummary
from pairflow.local_run import pipeline_steps
from pairflow.pipelines.retrain import build_pipeline

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

STATUS = re.compile(r"^(?:✓ done|✗ failed|- skipped)\s+(?P<step>[a-z-]+)\b")


def _pairflow_run(*sets: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    args = [arg for s in sets for arg in ("--set", s)]
    return subprocess.run(
        [sys.executable, "-m", "pairflow.cli", "run", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=1200,
        check=False,
    )


def _status_lines(stdout: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        match = STATUS.match(line)
        if match:
            found.setdefault(match["step"], line)
    return found


def test_run_prints_a_line_per_step_and_logs_to_files(
    tmp_path: Path, small_dataset: GenerateSummary, untrained_clip: Path
) -> None:
    sets = [
        f"run.workdir={tmp_path / 'w'}",
        f"data.source={small_dataset.manifest}",
        f"data.ground_truth={small_dataset.ground_truth}",
        "data.shards=2",
        f"clip_filter.model={untrained_clip}",
        "clip_filter.top_fraction=0.9",
        "train.batch_size=8",
        "train.epochs=1",
        "register.model_name=cli-out-clip",
    ]
    proc = _pairflow_run(*sets, cwd=tmp_path)
    out = proc.stdout
    (tmp_path / "stdout.txt").write_text(out)
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    lines = out.splitlines()
    assert len(lines) < 200, f"{len(lines)} lines:\n{out}"
    # kfp.local's streamed executor logs stay out of the terminal
    assert "executor_input" not in out and "Streamed logs" not in out
    steps = pipeline_steps(build_pipeline(load_config(None, sets)))
    status = _status_lines(out)
    assert set(steps) <= set(status), (steps, sorted(status))
    assert all("done" in status[s] for s in ("ingest", "validate", "train", "evaluate"))
    # train names its metric; every step's executor log is a file under the run dir
    assert re.search(r"train .*val recall@1", out)
    found = re.search(r"step logs \(one file per step\): (\S+)", out)
    assert found is not None, out
    log_dir = Path(found[1])
    assert {"ingest.log", "train.log", "validate-0.log", "validate-1.log"} <= {
        p.name for p in log_dir.iterdir()
    }
    assert (
        "executor_input" in (log_dir / "train.log").read_text()
        or (log_dir / "train.log").stat().st_size > 0
    )


def test_failing_step_shows_its_log_tail(tmp_path: Path) -> None:
    broken = tmp_path / "broken.parquet"
    pd.DataFrame({"id": ["a"], "caption": ["a red circle"]}).to_parquet(broken)
    proc = _pairflow_run(f"run.workdir={tmp_path / 'w'}", f"data.source={broken}", cwd=tmp_path)
    assert proc.returncode == 1
    out = proc.stdout
    assert len(out.splitlines()) < 200
    assert "failed" in _status_lines(out)["ingest"]
    head = re.search(r"step ingest failed; last (\d+) lines of (\S+):", out)
    assert head is not None, out
    log = Path(head[2])
    assert log.is_file() and log.parent.name == "logs"
    # the tail is the log's real last lines, ending in the error that names the input
    tail = log.read_text().splitlines()[-int(head[1]) :]
    assert int(head[1]) == min(30, len(log.read_text().splitlines()))
    assert f"  | {tail[-1]}" in out
    assert f"{broken}: missing required column(s) image" in tail[-1]
    assert f"full log: {log}" in out
    for step in ("validate", "train", "deploy"):
        assert "skipped" in _status_lines(out)[step]
