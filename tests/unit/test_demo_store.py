"""``pairflow demo`` starts from a fresh MLflow store of its own, and says what it did."""

from __future__ import annotations

from pathlib import Path

import pytest

from pairflow.cli import fresh_demo_store
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
