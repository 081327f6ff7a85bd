"""Register end to end against a real ``mlflow server`` over HTTP (and sqlite): lineage, card,
pyfunc, ``load_clip`` of the alias, idempotency, and outages.

Outages are real: an HTTP proxy in front of the server refuses chosen requests with 503 or
drops them, so the MLflow client sees the same failures as with a dead server. The retry policy
measured is the one pairflow sets: MLflow's own HTTP retries, from ``mlflow.http_*`` (no
backoff in those tests, so they stay quick).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from tests.local_http import BackgroundHTTPServer

from pairflow.config import PairflowConfig
from pairflow.demo.synthetic import generate_dataset
from pairflow.errors import InputDataError
from pairflow.models.clip import dir_digest, load_clip
from pairflow.models.scratch import save_untrained_clip
from pairflow.registry import names
from pairflow.registry.client import Registry
from pairflow.registry.governance import promote
from pairflow.registry.retry import GovernanceError, RegistryError, RegistryUnavailable
from pairflow.report import StageReport
from pairflow.stages.register.lineage import manifest_digest
from pairflow.stages.register.register_version import RegisterInputs, register_model
from pairflow.tracking import (
    HTTP_BACKOFF_ENV,
    HTTP_RETRIES_ENV,
    HTTP_TIMEOUT_ENV,
    start_pipeline_run,
)

pytestmark = pytest.mark.slow


@dataclass
class Material:
    root: Path
    manifest: Path
    frame: pd.DataFrame
    compressed: Path
    evaluate_passed: Path
    evaluate_failed: Path
    reports: list[Path]
    reference: Path
    docs: Path
    plot: Path


def _evaluate(path: Path, rows: int, passed: bool) -> Path:
    gate = {
        "passed": passed,
        "enforced": True,
        "reasons": [f"recall@1 delta {'ok' if passed else 'too low'}"],
        "checks": [
            {
                "check": "non_inferiority",
                "metric": "recall_at_1",
                "value": 0.03,
                "interval": [-0.01, 0.07],
                "confidence": 0.95,
                "candidate": 0.41,
                "champion": 0.38,
                "n": rows,
                "threshold": -0.02,
                "passed": passed,
            }
        ],
    }
    metrics = {
        "gate": gate,
        "recall_at_1": 0.41,
        "delta_recall_at_1": {"value": 0.03, "ci_low": -0.01, "ci_high": 0.07},
        "drift": {"skipped": False, "detected": False, "drifted_share": 0.1},
    }
    StageReport(stage="evaluate", rows_in=rows, rows_out=rows, metrics=metrics).write(path)
    return path


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Material:
    root = tmp_path_factory.mktemp("registry")
    data = generate_dataset(root / "data", 40, seed=3, defects=False, image_size=32)
    frame = pd.read_parquet(data.manifest)
    frame["image"] = [str((data.manifest.parent / p).resolve()) for p in frame["image"]]
    manifest = root / "kept.parquet"
    frame.to_parquet(manifest)
    compressed = root / "compressed"
    save_untrained_clip(compressed / "fp32_torch", list(frame["caption"]), seed=0)
    save_untrained_clip(compressed / "student_fp32", list(frame["caption"]), seed=1)
    index = {
        "format": "pairflow-compressed/1",
        "chosen": "student_fp32",
        "variants": [
            {
                "name": "fp32_torch",
                "kind": "torch",
                "files": [],
                "metrics": {"recall_at_1": 0.42, "size_bytes": 900},
            },
            {
                "name": "student_fp32",
                "kind": "torch",
                "files": [],
                "metrics": {"recall_at_1": 0.41, "size_bytes": 500},
            },
        ],
    }
    (compressed / "variants.json").write_text(json.dumps(index))
    (compressed / "variants.md").write_text("| variant |\n|---|\n| student_fp32 |\n")
    reports = []
    for stage, out, rejected in (
        ("ingest", 45, {"unreadable": 5}),
        ("dedupe", 40, {"exact_duplicate": 5}),
    ):
        path = root / f"{stage}-report"
        rows_in = out + sum(rejected.values())
        StageReport(stage=stage, rows_in=rows_in, rows_out=out, rejected=rejected).write(path)
        reports.append(path)
    reference = root / "reference"
    pd.DataFrame({"score": np.linspace(0, 1, 10)}).to_parquet(reference)
    docs = root / "docs"
    (docs / "validations").mkdir(parents=True)
    (docs / "index.html").write_text("<html>data docs</html>")
    plot = root / "plots"  # as KFP hands evaluate's plots page over: no extension
    plot.write_text("<!doctype html><html><body><img alt='recall'></body></html>")
    return Material(
        root,
        manifest,
        frame,
        compressed,
        _evaluate(root / "evaluate-passed", len(frame), True),
        _evaluate(root / "evaluate-failed", len(frame), False),
        reports,
        reference,
        docs,
        plot,
    )


def _cfg(uri: str, name: str, retries: int | None = None) -> PairflowConfig:
    cfg = PairflowConfig()
    cfg.mlflow.tracking_uri = uri
    cfg.register_.model_name = name
    if retries is not None:
        cfg.mlflow.http_retries = retries
        cfg.mlflow.http_backoff_factor = 0
        cfg.mlflow.http_timeout_s = 10
    return cfg


def _inputs(m: Material, kfp_run_id: str, evaluate: Path) -> RegisterInputs:
    return RegisterInputs(
        manifest=m.manifest,
        compressed=m.compressed,
        evaluate_report=evaluate,
        stage_reports=m.reports,
        data_docs=m.docs,
        eval_plots=[m.plot],
        drift_reference=m.reference,
        serving_reference=m.reference,
        kfp_run_id=kfp_run_id,
        kfp_run_name="nightly",
    )


@pytest.fixture(scope="module")
def registered(mlflow_server: str, material: Material) -> tuple[Any, Any]:
    cfg = _cfg(mlflow_server, "reg-http")
    return cfg, register_model(cfg, _inputs(material, "kfp-http-1", material.evaluate_passed))


def test_version_carries_lineage_card_and_challenger(
    mlflow_server: str, material: Material, registered: tuple[Any, Any]
) -> None:
    cfg, result = registered
    client = MlflowClient(mlflow_server)
    mv = client.get_model_version("reg-http", result.version)
    tags = mv.tags
    assert tags[names.TAG_DATA_SNAPSHOT] == manifest_digest(material.frame)
    assert tags[names.TAG_CONFIG_HASH] == cfg.digest()
    assert tags[names.TAG_GATE] == "passed" and tags[names.TAG_COMPLETE] == "true"
    assert tags[names.TAG_VARIANT] == "student_fp32"
    assert tags[names.TAG_MODEL_DIGEST] == dir_digest(material.compressed / "student_fp32")
    assert tags[names.TAG_KFP_RUN_ID] == "kfp-http-1"
    assert tags["pairflow.metric.recall_at_1"] == "0.41"
    assert client.get_model_version_by_alias("reg-http", "challenger").version == mv.version
    assert result.deployable_uri == f"models:/reg-http/{mv.version}"
    card = mv.description or ""
    run_id = str(mv.run_id)
    assert "**Gate: PASSED**" in card and "| +0.030 [-0.010, +0.070] 95% |" in card
    assert "| dedupe | 45 | 40 | 5 | exact_duplicate: 5 |" in card
    assert "Chosen: **student_fp32**" in card and "**Drift: none** — 0.10 of" in card
    # lineage: the version points at the pipeline run and its logged model
    run = client.get_run(run_id)
    assert run.data.tags["pairflow.kfp_run_id"] == "kfp-http-1"
    assert mv.source == f"models:/{result.model_id}"
    assert client.get_logged_model(result.model_id).source_run_id == run_id
    contexts = {
        d.dataset.name: (d.tags[0].value, d.dataset.digest)
        for d in (run.inputs.dataset_inputs if run.inputs else [])
    }
    assert contexts["train"] == ("training", tags["pairflow.dataset.train_digest"])
    assert contexts["holdout"] == ("evaluation", tags["pairflow.dataset.holdout_digest"])
    files = {f.path for f in client.list_artifacts(run_id, "pairflow")}
    assert {
        "pairflow/drift_reference.parquet",
        "pairflow/serving_reference.parquet",
        "pairflow/model_card.md",
        "pairflow/data_docs",
    } <= files
    attached = {f.path for f in client.list_artifacts(run_id, "pairflow/variants/fp32_torch")}
    assert "pairflow/variants/fp32_torch/model.safetensors" in attached
    plots = {f.path for f in client.list_artifacts(run_id, "pairflow/plots")}
    assert plots == {"pairflow/plots/plots.html"}  # named so MLflow renders it as HTML
    reports = {f.path for f in client.list_artifacts(run_id, "pairflow/reports")}
    assert reports == {f"pairflow/reports/{s}.json" for s in ("ingest", "dedupe", "evaluate")}


def test_pyfunc_serves_scores_embeddings_and_labels(
    mlflow_server: str, material: Material, registered: tuple[Any, Any], tmp_path: Path
) -> None:
    import mlflow.pyfunc
    import torch

    from pairflow.registry.logged_model import tracking_uri

    with tracking_uri(mlflow_server):
        model = mlflow.pyfunc.load_model("models:/reg-http@challenger")
    rows = material.frame.head(4)
    scores = model.predict(rows[["image", "caption"]].reset_index(drop=True))["score"].to_numpy()
    # the same cosine computed directly from the chosen variant's weights
    ref = load_clip(str(material.compressed / "student_fp32"), device="cpu")
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in rows["image"]]
    with torch.inference_mode():
        pix = ref.processor(images=images, return_tensors="pt")["pixel_values"]
        img = ref.model.get_image_features(pixel_values=pix)
        tok = ref.processor.tokenizer(list(rows["caption"]), padding=True, return_tensors="pt")
        txt = ref.model.get_text_features(**tok)
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    expected = torch.nn.functional.cosine_similarity(img, txt).numpy()
    np.testing.assert_allclose(scores, expected, atol=1e-5)
    # bytes and data: URIs give the same embedding as the path
    raw = Path(rows["image"].iloc[0]).read_bytes()
    data_uri = "data:image/png;base64," + base64.b64encode(raw).decode()
    frame = pd.DataFrame({"image": [rows["image"].iloc[0], data_uri], "caption": ["a", None]})
    emb = model.predict(frame, params={"mode": "embeddings"})
    a, b = (np.asarray(v) for v in emb["image_embedding"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert abs(np.linalg.norm(a) - 1) < 1e-5 and emb["text_embedding"].iloc[1] is None
    labels = model.predict(rows[["image"]].reset_index(drop=True), params={"mode": "labels"})
    assert set(labels["label"]) <= set(material.frame["label"])


def test_alias_loads_with_load_clip(
    mlflow_server: str, material: Material, registered: tuple[Any, Any], tmp_path: Path
) -> None:
    loaded = load_clip(
        "models:/reg-http@challenger", tracking_uri=mlflow_server, cache_dir=tmp_path, device="cpu"
    )
    assert loaded.digest == dir_digest(material.compressed / "student_fp32")


def test_rerun_for_same_kfp_run_reuses_the_version(
    mlflow_server: str, material: Material, registered: tuple[Any, Any]
) -> None:
    cfg, first = registered
    again = register_model(cfg, _inputs(material, "kfp-http-1", material.evaluate_passed))
    assert again.reused and again.version == first.version
    found = MlflowClient(mlflow_server).search_model_versions("name='reg-http'")
    assert [v.version for v in found] == [first.version]


# ---------------------------------------------------------------------------------------------
# outages


class _Proxy:
    """Forwards HTTP to the MLflow server; ``fail`` decides which requests get a 503."""

    def __init__(self, upstream: str) -> None:
        target = urlparse(upstream)
        host, port = str(target.hostname), target.port
        proxy = self
        self.fail: Callable[[str, str], bool] = lambda method, path: False
        self.refused: list[str] = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.fail(self.command, self.path):
                    proxy.refused.append(f"{self.command} {self.path}")
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection(host, port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _forward

        self.http = BackgroundHTTPServer(Handler)
        self.url = self.http.url

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def proxy(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[_Proxy]:
    # the tests' configs set MLflow's retry environment: restored to what it was afterwards
    for name in (HTTP_RETRIES_ENV, HTTP_BACKOFF_ENV, HTTP_TIMEOUT_ENV):
        monkeypatch.setenv(name, os.environ.get(name, "0"))
    p = _Proxy(mlflow_server)
    yield p
    p.close()


def test_full_outage_fails_clearly_after_retries(proxy: _Proxy, material: Material) -> None:
    proxy.fail = lambda method, path: True
    cfg = _cfg(proxy.url, "reg-outage", retries=2)
    with pytest.raises(RegistryUnavailable, match=r"failed after 3 attempts"):
        register_model(cfg, _inputs(material, "kfp-down", material.evaluate_passed))
    assert len(proxy.refused) == 3


def test_outage_after_version_creation_leaves_no_version(
    proxy: _Proxy, mlflow_server: str, material: Material
) -> None:
    name = "reg-half"
    proxy.fail = lambda method, path: "model-versions/set-tag" in path
    cfg = _cfg(proxy.url, name, retries=2)
    with pytest.raises(RegistryError, match=r"mark reg-half/1 complete failed after 3 attempts"):
        register_model(cfg, _inputs(material, "kfp-half", material.evaluate_passed))
    assert len(proxy.refused) == 3
    client = MlflowClient(mlflow_server)
    assert list(client.search_model_versions(f"name='{name}'")) == []
    assert "challenger" not in client.get_registered_model(name).aliases
    # the server is back: the same pipeline run registers exactly one complete version
    proxy.fail = lambda method, path: False
    result = register_model(cfg, _inputs(material, "kfp-half", material.evaluate_passed))
    versions = list(client.search_model_versions(f"name='{name}'"))
    assert [v.version for v in versions] == [result.version]
    assert versions[0].tags[names.TAG_COMPLETE] == "true"
    assert client.get_model_version_by_alias(name, "challenger").version == result.version


def test_failed_gate_on_sqlite_registers_without_alias(tmp_path: Path, material: Material) -> None:
    cfg = _cfg(f"sqlite:///{tmp_path / 'mlflow.db'}", "reg-sqlite")
    result = register_model(cfg, _inputs(material, "kfp-gate-failed", material.evaluate_failed))
    client = MlflowClient(cfg.mlflow.tracking_uri)
    mv = client.get_model_version("reg-sqlite", result.version)
    assert mv.tags[names.TAG_GATE] == "failed" and mv.aliases == []
    assert result.deployable_uri == "" and not result.challenger
    assert "**Gate: FAILED**" in (mv.description or "")
    with pytest.raises(GovernanceError, match="gate is failed"):
        promote(
            Registry(cfg.mlflow.tracking_uri),
            "reg-sqlite",
            result.version,
            reason="try",
            actor="t",
            policy="auto",
        )
    assert client.get_registered_model("reg-sqlite").aliases == {}
    shutil.rmtree(tmp_path / "unused", ignore_errors=True)


def test_component_returns_uri_card_and_report(tmp_path: Path, material: Material) -> None:
    from kfp import dsl

    from pairflow.components.register import register

    cfg = _cfg(f"sqlite:///{tmp_path / 'mlflow.db'}", "reg-component")
    config = tmp_path / "config.json"
    config.write_text(cfg.to_json())

    def art(kind: Any, name: str) -> Any:
        return kind(uri=str(tmp_path / name))

    outs = {
        "report": art(dsl.Artifact, "report"),
        "summary": art(dsl.Markdown, "summary"),
        "model_card": art(dsl.Markdown, "card"),
    }
    # the pipeline's MLflow run, as resolve-config opens it and hands its id on
    run_id = start_pipeline_run(cfg, "kfp-component", "component")
    uri = register.python_func(
        config=dsl.Artifact(uri=str(config)),
        manifest=dsl.Dataset(uri=str(material.manifest)),
        model=dsl.Model(uri=str(material.compressed)),
        mlflow_run_id=run_id,
        kfp_run_id="kfp-component",
        evaluate_report=dsl.Artifact(uri=str(material.evaluate_passed)),
        ingest_report=dsl.Artifact(uri=str(material.reports[0])),
        **outs,
    )
    rep = json.loads(Path(outs["report"].path).read_text())
    assert uri == rep["metrics"]["registered_version"] == "models:/reg-component/1"
    assert rep["implemented"] and rep["rows_in"] == rep["rows_out"] == len(material.frame)
    assert rep["metrics"]["mlflow_run_id"] == run_id  # the version is logged under that run
    assert "**Gate: PASSED**" in Path(outs["model_card"].path).read_text()
    # a model input without a model is an error naming the input, never a pass-through
    marker = tmp_path / "no-model"
    marker.mkdir()
    with pytest.raises(InputDataError, match=r"input model \(.*no-model\) holds no model files"):
        register.python_func(
            config=dsl.Artifact(uri=str(config)),
            manifest=dsl.Dataset(uri=str(material.manifest)),
            model=dsl.Model(uri=str(marker)),
            mlflow_run_id="",
            kfp_run_id="kfp-none",
            **outs,
        )
