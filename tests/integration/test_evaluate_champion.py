"""Evaluate against a real MLflow server: first run (no champion) and a registered champion.

The champion is a tiny CLIP whose projection layers are fitted on the held-out pairs (so it is
clearly better than an untrained candidate), logged as run artifacts, registered and aliased
``champion`` here; its run also carries the drift reference written by the first run.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from mlflow import MlflowClient

from pairflow.config import PairflowConfig, load_config
from pairflow.data.split import split_holdout
from pairflow.demo.synthetic import generate_dataset
from pairflow.drift.reference import read_reference
from pairflow.models.clip import save_clip
from pairflow.models.embeddings import Embeddings, write_embeddings
from pairflow.models.open import open_model
from pairflow.models.scoring import score_frame
from pairflow.models.scratch import save_untrained_clip
from pairflow.registry.champion import DRIFT_REFERENCE_ARTIFACT
from pairflow.report import StageReport
from pairflow.stage_io import load_step_config
from pairflow.stages.evaluate.scoring import score_holdout
from pairflow.stages.evaluate.step import EvaluateInputs, EvaluateOutputs, run
from pairflow.tracking import start_pipeline_run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluate")
    gen = generate_dataset(root / "data", 90, seed=5, defects=False)
    df = pd.read_parquet(gen.manifest)
    df["image"] = [str((gen.manifest.parent / p).resolve()) for p in df["image"]]
    manifest = root / "manifest.parquet"
    df.to_parquet(manifest)
    untrained = save_untrained_clip(root / "untrained", df["caption"].tolist(), seed=0)
    champion = _fit_on_holdout(untrained, df, root / "champion")
    loaded = open_model(untrained, device=None).clip
    cfg = PairflowConfig()
    res = score_frame(df, loaded, cfg.clip_filter)
    emb = write_embeddings(
        root / "embeddings.parquet",
        Embeddings(list(df["id"]), res.image_emb, res.text_emb, res.scores, {"model_digest": "x"}),
    )
    return {
        "root": root,
        "manifest": manifest,
        "untrained": untrained,
        "champion": champion,
        "embeddings": emb,
    }


def _fit_on_holdout(start: Path, df: pd.DataFrame, out: Path, steps: int = 300) -> Path:
    """Overfit the held-out pairs: a clearly better model, cheaply.

    The towers stay frozen; only the two projection layers are fitted (contrastive loss,
    full batch) on the towers' cached pooled outputs, so the saved CLIP's held-out
    embeddings are exactly the ones optimised here.
    """
    clip = open_model(start).clip
    _, holdout = split_holdout(df, 0.3)
    model = clip.model
    scores = score_holdout(clip, holdout, [])  # reuse the reader: check every image reads
    assert scores.ok.all()
    from pairflow.models.scoring import Collate, PairDataset

    items = [
        PairDataset(holdout["image"].tolist(), holdout["caption"].tolist())[i]
        for i in range(len(holdout))
    ]
    batch = Collate(clip.processor, clip.max_text_length)(items)
    assert batch.pixel_values is not None and batch.input_ids is not None
    with torch.no_grad():
        vis = model.vision_model(pixel_values=batch.pixel_values).pooler_output
        txt = model.text_model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask
        ).pooler_output
    torch.manual_seed(0)
    params = [*model.visual_projection.parameters(), *model.text_projection.parameters()]
    # lr 1e-2 made the fit chaotic: 1e-7 input rounding flipped held-out recall 1.0 -> 0.33
    optim = torch.optim.Adam(params, lr=3e-3)
    target = torch.arange(len(holdout))
    for _ in range(steps):
        img = F.normalize(model.visual_projection(vis), dim=-1)
        t = F.normalize(model.text_projection(txt), dim=-1)
        logits = 20.0 * img @ t.T
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        optim.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optim.step()
    return save_clip(out, model, clip.processor)


def _cfg(root: Path, uri: str, name: str, *extra: str) -> Path:
    cfg = load_config(
        None,
        [
            f"run.workdir={root}",
            f"mlflow.tracking_uri={uri}",
            f"register.model_name={name}",
            "data.split.holdout_fraction=0.3",
            "evaluate.bootstrap_samples=500",
            *extra,
        ],
    )
    path = root / f"config-{uuid.uuid4().hex[:8]}.json"
    path.write_text(cfg.to_json())
    return path


def _run(
    setup: dict[str, Path], cfg: Path, model: Path, mlflow_run_id: str = ""
) -> tuple[bool, dict[str, Any], EvaluateOutputs]:
    out_dir = setup["root"] / f"out-{uuid.uuid4().hex[:8]}"
    files = EvaluateOutputs.in_dir(out_dir)
    inputs = EvaluateInputs(
        str(setup["manifest"]),
        str(model),
        embeddings=str(setup["embeddings"]),
        mlflow_run_id=mlflow_run_id,
    )
    outcome = run(load_step_config(cfg), inputs, files)
    rep = StageReport.read(out_dir / "report.json")
    assert rep.rows_in == rep.rows_out == 90 and rep.rows_rejected == 0
    assert rep.metrics["gate"]["passed"] is outcome.passed
    return outcome.passed, rep.metrics, files


def _register_champion(uri: str, name: str, model_dir: Path, reference: Path) -> str:
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment(f"champ-{uuid.uuid4().hex[:8]}")
    run = client.create_run(exp)
    run_id = run.info.run_id
    client.log_artifacts(run_id, str(model_dir), "hf")
    client.log_artifact(run_id, str(reference), str(Path(DRIFT_REFERENCE_ARTIFACT).parent))
    client.set_terminated(run_id)
    client.create_registered_model(name)
    mv = client.create_model_version(name, f"{run.info.artifact_uri}/hf", run_id=run_id)
    client.set_registered_model_alias(name, "champion", mv.version)
    return str(run_id)


def _check_serving_reference(files: EvaluateOutputs, metrics: dict[str, Any]) -> None:
    """The candidate's own view of the run's rows: every held-out row plus the training rows
    (fewer than evaluate.serving_reference_train_rows here), its digest, its own pair scores."""
    assert files.serving_reference is not None
    ref = read_reference(files.serving_reference)
    assert ref.meta["role"] == "serving" and ref.meta["model_digest"] == metrics["model_digest"]
    assert ref.meta["holdout_rows"] == metrics["holdout_rows"]
    assert ref.meta["train_rows"] == metrics["train_rows"] == 90 - metrics["holdout_rows"]
    assert len(ref.frame) == 90 and metrics["serving_reference"]["rows"] == 90
    assert ref.image is not None and ref.text is not None and len(ref.image) == 90
    cosine = np.einsum("ij,ij->i", ref.image.astype(np.float32), ref.text.astype(np.float32))
    assert np.allclose(ref.frame["clip_score"].to_numpy(), cosine, atol=2e-3)
    filter_ref = read_reference(files.reference)  # the filter model's: other embeddings
    assert filter_ref.meta["model_digest"] != ref.meta["model_digest"]


def test_first_run_then_champion_gate(setup: dict[str, Path], mlflow_server: str) -> None:
    name = f"eval-{uuid.uuid4().hex[:8]}"
    root = setup["root"]
    # first run: no registered model -> absolute minimums only, logged on the pipeline run
    cfg_path = _cfg(root, mlflow_server, name, "mlflow.experiment=eval-first")
    cfg = load_config(
        None,
        [
            f"run.workdir={root}",
            f"mlflow.tracking_uri={mlflow_server}",
            "mlflow.experiment=eval-first",
        ],
    )
    run_id = start_pipeline_run(cfg, "kfp-first", "first")
    passed, metrics, files = _run(setup, cfg_path, setup["champion"], run_id)
    assert passed and metrics["gate"]["enforced"] is True, metrics["gate"]["reasons"]
    assert metrics["champion"] is None
    assert any(
        "first run" in r and "absolute minimums only" in r for r in metrics["gate"]["reasons"]
    )
    assert metrics["candidate"]["i2t_recall_at_1"] > 0.5  # fitted on these rows
    assert metrics["holdout_rows"] == metrics["evaluated_rows"] > 10
    _check_serving_reference(files, metrics)
    run = MlflowClient(tracking_uri=mlflow_server).get_run(run_id)
    assert run.data.tags["pairflow.gate.passed"] == "true"
    assert run.data.metrics["evaluate.gate_passed"] == 1.0
    assert run.data.metrics["evaluate.candidate.i2t_recall_at_1"] == pytest.approx(
        metrics["candidate"]["i2t_recall_at_1"]
    )
    arts = [
        a.path for a in MlflowClient(tracking_uri=mlflow_server).list_artifacts(run_id, "evaluate")
    ]
    assert "evaluate/drift.html" in arts and "evaluate/plots.html" in arts
    first_page = files.plots.read_text() if files.plots is not None else ""
    assert "Retrieval recall@k" in first_page and "Deltas against" not in first_page

    strict = _cfg(root, mlflow_server, name, "evaluate.min_recall_at_1=1.0")
    blocked, strict_metrics, _ = _run(setup, strict, setup["untrained"])
    assert not blocked
    assert any(r.startswith("FAIL i2t_recall_at_1") for r in strict_metrics["gate"]["reasons"])

    # champion registered with the first run's drift reference
    _register_champion(mlflow_server, name, setup["champion"], files.reference)
    equal_cfg = _cfg(root, mlflow_server, name)
    ok, eq, _ = _run(setup, equal_cfg, setup["champion"])
    assert ok, eq["gate"]["reasons"]
    assert eq["champion"]["version"] == "1"
    d = eq["deltas"]["i2t_recall_at_1"]
    assert (d["delta"], d["low"], d["high"]) == (0.0, 0.0, 0.0)
    assert eq["drift"]["skipped"] is False and eq["drift"]["detected"] is False
    # this champion is a bare HF directory, not a compressed variant: nothing to time against
    assert any(r.startswith("SKIP latency: champion models:/") for r in eq["gate"]["reasons"]), eq[
        "gate"
    ]["reasons"]
    assert first_page and "latency" not in [c["check"] for c in metrics["gate"]["checks"]]

    worse, bad, bad_files = _run(setup, equal_cfg, setup["untrained"])
    assert not worse
    assert bad["deltas"]["i2t_recall_at_1"]["high"] < 0
    assert any(r.startswith("FAIL inferior i2t_recall_at_1") for r in bad["gate"]["reasons"])
    assert bad_files.summary is not None and "FAILED" in bad_files.summary.read_text()
    page = bad_files.plots.read_text() if bad_files.plots is not None else ""
    assert "Deltas against the champion" in page and "Retrieval recall@k" in page
    json.dumps(bad)  # the report is plain JSON (no NaN objects)
