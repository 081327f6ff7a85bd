"""``pairflow demo`` starts from a fresh MLflow store of its own, and says what it did."""

from __future__ import annotations

from pathlib import Path

import pytest

from pairflow.demo.cli import fresh_demo_store
from pairflow.tracking import resolve_tracking_uri


def test_the_demo_store_is_removed_and_a_foreign_one_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the demo's own store only
    workdir = tmp_path / "demo"
    (workdir / "mlartifacts" / "1").mkdir(parents=True)
    (workdir / "mlflow.db").write_bytes(b"an earlier demo")
    (workdir / "runs").mkdir()
    said = fresh_demo_store(workdir, resolve_tracking_uri("", workdir))
    assert said.startswith("fresh MLflow store: removed the earlier demo's")
    assert "--keep-store" in said
    assert not (workdir / "mlflow.db").exists() and not (workdir / "mlartifacts").exists()
    assert (workdir / "runs").is_dir()  # earlier run outputs are not the store
    assert fresh_demo_store(workdir, resolve_tracking_uri("", workdir)) == (
        f"fresh MLflow store: {(workdir / 'mlflow.db').resolve()}"
    )
    other = tmp_path / "elsewhere.db"
    other.write_bytes(b"someone's store")
    said = fresh_demo_store(workdir, f"sqlite:///{other}")
    assert "not the demo's own: kept" in said and other.exists()


def test_run_highlights_state_the_latency_budget_against_the_champion() -> None:
    from pairflow.report import StageReport
    from pairflow.run_console import highlights

    budget = {
        "met": False,
        "chosen_p50_ms": 6.64,
        "batch_size": 32,
        "limit_ms": 5.34,
        "champion_p50_ms": 4.85,
        "max_slowdown": 0.1,
    }
    compress = StageReport(
        stage="compress",
        rows_in=1,
        rows_out=1,
        metrics={
            "chosen": "int8_onnx",
            "selection": {"latency_budget": budget},
            "variants": {"int8_onnx": {"speedup_b32": 2.8, "size_ratio": 2.8}},
        },
    )
    lines = highlights({"compress": compress})
    assert lines[0].startswith("compress: chose int8_onnx (2.8x faster")
    assert lines[1] == (
        "  Latency budget NOT met: chosen p50 6.64 ms at batch 32 vs limit 5.34 ms "
        "(champion 4.85 ms + 10%, timed interleaved)."
    )
    del compress.metrics["selection"]  # first run: no champion, no budget line
    assert len(highlights({"compress": compress})) == 1
