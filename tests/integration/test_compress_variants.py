"""compress end to end on a tiny CLIP and synthetic rows: real ONNX export, ORT int8,
distillation through the train loop, the variant index, the step and its MLflow record."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pandas as pd
import pytest
import torch
from onnx import numpy_helper

from pairflow.config import SplitConfig
from pairflow.data.sources import read_source
from pairflow.demo.synthetic import generate_dataset
from pairflow.models.errors import LatencyBudgetError, ModelLoadError, ParityError
from pairflow.models.export import check_parity, export_towers
from pairflow.models.latency import load_held_out
from pairflow.models.open import open_model
from pairflow.models.runners import OrtClip, TorchClip
from pairflow.models.scratch import save_untrained_clip
from pairflow.models.variants import LoadedVariant, VariantIndex
from pairflow.stages.compress.build import CompressResult, compress_model
from pairflow.stages.compress.settings import CompressConfig

pytestmark = pytest.mark.slow

HOLDOUT = 0.3
SPLIT = SplitConfig(holdout_fraction=HOLDOUT)
ALL = ["fp32_torch", "fp32_onnx", "int8_onnx", "int8_static_onnx", "student_fp32", "student_int8"]


@pytest.fixture(scope="module")
def rows_and_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, Path]:
    root = tmp_path_factory.mktemp("compress")
    gen = generate_dataset(root / "data", 96, seed=5, defects=False)
    df = read_source(str(gen.manifest), "parquet")
    model = save_untrained_clip(root / "model", [str(c) for c in df["caption"]], seed=1)
    return df, model


@pytest.fixture(scope="module")
def compressed(
    rows_and_model: tuple[object, Path], tmp_path_factory: pytest.TempPathFactory
) -> tuple[CompressResult, Path]:
    df, model = rows_and_model
    out = tmp_path_factory.mktemp("out") / "compressed"
    cfg = CompressConfig(
        distill=True,
        latency_repeats=3,
        student={"epochs": 1, "batch_size": 16},
        calibration_size=16,
    )
    result = compress_model(model, df, cfg, out, split=SPLIT)  # type: ignore[arg-type]
    return result, out


def test_every_variant_is_written_measured_and_indexed(
    compressed: tuple[CompressResult, Path],
) -> None:
    result, out = compressed
    index = VariantIndex.read(out)
    assert [v.name for v in index.variants] == ALL
    assert sum(v.chosen for v in index.variants) == 1
    assert index.get(index.chosen).chosen
    for v in index.variants:
        assert v.files and all((out / v.name / f).is_file() for f in v.files)
        m = v.metrics
        assert 0.0 <= m["recall_at_1"] <= 1.0
        assert set(m["latency_ms"]) == {"1", "32"}
        assert m["latency_ms"]["32"]["p95_ms"] >= m["latency_ms"]["32"]["p50_ms"] > 0
    fp32 = index.get("fp32_onnx").metrics
    assert fp32["parity"]["vision_min_cosine"] >= 0.999
    assert index.get("int8_onnx").metrics["size_bytes"] < 0.5 * fp32["size_bytes"]
    assert index.get("student_fp32").metrics["params"] <= 0.5 * fp32["params"]
    assert result.distill is not None and result.distill["steps"] >= 1
    assert "| **" + index.chosen in result.table


def load_variant(out: Path, name: str = "auto", threads: int | None = None) -> LoadedVariant:
    """Variant ``name`` of a compressed directory as ``open_model`` opens it."""
    loaded = open_model(out, variant=name, threads=threads).loaded_variant
    assert loaded is not None
    return loaded


def test_any_variant_loads_and_embeds_like_the_fp32_model(
    compressed: tuple[CompressResult, Path], rows_and_model: tuple[object, Path]
) -> None:
    _, out = compressed
    ref = load_variant(out, "fp32_torch")
    images = np.random.default_rng(0).normal(size=(3, 3, 64, 64)).astype(np.float32)
    ids, mask = ref.tokenize(["a red circle", "two blue squares on the left", "a star"])
    want_i, want_t = ref.embed_images(images), ref.embed_texts(ids, mask)
    for name, tol in [("fp32_onnx", 0.999), ("int8_onnx", 0.9), ("int8_static_onnx", 0.8)]:
        got = load_variant(out, name, threads=1)
        assert got.kind == "onnx"
        assert np.min(np.sum(got.embed_images(images) * want_i, axis=1)) >= tol
        assert np.min(np.sum(got.embed_texts(ids, mask) * want_t, axis=1)) >= tol
    student = load_variant(out, "student_int8")
    emb = student.embed_images(images)
    assert emb.shape[0] == 3 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)
    assert load_variant(out).name == VariantIndex.read(out).chosen
    with pytest.raises(ModelLoadError, match="no variant 'nope'"):
        load_variant(out, "nope")


def test_champion_is_timed_with_the_variants_and_bounds_the_choice(
    compressed: tuple[CompressResult, Path],
    rows_and_model: tuple[object, Path],
    tmp_path: Path,
) -> None:
    """The latency budget's real path: the champion's shipped variant (here the distilled
    int8 student of the module's run) is timed in the same process, interleaved with the new
    variants, and its p50 bounds the choice; a miss stops compress under the default policy."""
    _, first = compressed
    df, model = rows_and_model
    assert isinstance(df, pd.DataFrame)
    champion = (first / "student_int8", "onnx")
    base = {"int8": True, "static_vision": False, "latency_repeats": 5}
    # generous budget: something fits, and the record holds the champion's own timings
    out = tmp_path / "loose"
    cfg = CompressConfig(**base, max_slowdown_vs_champion=100.0)
    result = compress_model(model, df, cfg, out, split=SPLIT, champion=champion)
    sel = result.index.selection
    champ = sel["champion_latency_ms"]
    assert set(champ) == {"1", "32"} and champ["32"]["p50_ms"] > 0
    budget = sel["latency_budget"]
    assert budget["met"] is True
    assert budget["champion_p50_ms"] == pytest.approx(champ["32"]["p50_ms"], abs=1e-3)
    assert budget["limit_ms"] == pytest.approx(budget["champion_p50_ms"] * 101, rel=1e-3)
    chosen = result.index.get(result.index.chosen).metrics["latency_ms"]["32"]["p50_ms"]
    assert chosen == budget["chosen_p50_ms"] <= budget["limit_ms"]
    # no slack over a smaller champion: every variant of the full model is slower than the
    # distilled int8 student, so nothing fits and, by default, nothing ships
    cfg = CompressConfig(**base, max_slowdown_vs_champion=0.0)
    with pytest.raises(LatencyBudgetError, match=r"latency budget not met.*variants\.md"):
        compress_model(model, df, cfg, tmp_path / "tight", split=SPLIT, champion=champion)
    missed = VariantIndex.read(tmp_path / "tight").selection
    assert missed["latency_budget"]["met"] is False
    assert missed["latency_budget"]["chosen_p50_ms"] > missed["latency_budget"]["limit_ms"]


def test_candidate_latency_against_the_champion_before_compress(
    compressed: tuple[CompressResult, Path], rows_and_model: tuple[object, Path]
) -> None:
    """What the evaluate gate reports: the fp32 candidate and the champion's shipped variant
    (here the module run's int8 student) timed together, in the latency worker."""
    from pairflow.stages.evaluate.versus_champion import latency_versus_champion

    _, first = compressed
    df, model = rows_and_model
    assert isinstance(df, pd.DataFrame)
    cfg = CompressConfig(latency_repeats=5)
    got = latency_versus_champion(model, df, (first / "student_int8", "onnx"), cfg)
    assert got.batch_size == 32 and got.champion_variant == "student_int8"
    assert 0 < got.candidate_p50_ms <= got.candidate_p95_ms
    assert 0 < got.champion_p50_ms <= got.champion_p95_ms
    assert got.ratio == pytest.approx(got.candidate_p50_ms / got.champion_p50_ms)
    check = got.check()
    assert check["check"] == "latency" and check["gated"] is False and check["interleaved"]


def test_corrupted_onnx_export_fails_parity(
    rows_and_model: tuple[object, Path], tmp_path: Path
) -> None:
    df, model_dir = rows_and_model
    loaded = open_model(model_dir, variant="torch").clip
    held = load_held_out(df.iloc[:8], loaded.processor, loaded.max_text_length)  # type: ignore[attr-defined]
    px, ids, mask = (torch.from_numpy(a) for a in held.batches[0])
    files = export_towers(loaded.model, tmp_path, px, ids, mask)
    graph = onnx.load(str(files.vision))
    biggest = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    noisy = numpy_helper.to_array(biggest) + np.random.default_rng(0).normal(
        0, 1.0, size=tuple(biggest.dims)
    ).astype(np.float32)
    biggest.CopyFrom(numpy_helper.from_array(noisy.astype(np.float32), biggest.name))
    onnx.save(graph, str(files.vision))
    torch_runner = TorchClip(loaded.model)
    with pytest.raises(ParityError, match="vision tower fails parity"):
        check_parity(torch_runner, OrtClip(files.vision, files.text), held.batches, 0.999, "m")


def test_step_writes_conserved_report_and_logs_the_table_to_mlflow(
    rows_and_model: tuple[object, Path], tmp_path: Path
) -> None:
    from mlflow import MlflowClient

    from pairflow import tracking
    from pairflow.config import PairflowConfig
    from pairflow.data.schema import write_manifest
    from pairflow.stage_io import load_step_config
    from pairflow.stages.compress import step

    df, model_dir = rows_and_model
    cfg = PairflowConfig()
    cfg.mlflow.tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg.data.split.holdout_fraction = HOLDOUT
    cfg.compress = CompressConfig(
        static_vision=False, latency_repeats=3, latency_batch_sizes=[1, 8], selection_batch_size=8
    )
    (tmp_path / "config.json").write_text(json.dumps(cfg.to_dict()))
    write_manifest(df, tmp_path / "in.parquet")  # type: ignore[arg-type]
    run_id = tracking.start_pipeline_run(cfg, "kfp-compress", "t")
    outputs = step.CompressOutputs(tmp_path / "compressed", tmp_path / "step" / "report.json")
    report = step.run(
        load_step_config(tmp_path / "config.json"),
        step.CompressInputs(str(tmp_path / "in.parquet"), str(model_dir), run_id),
        outputs,
    )
    assert report.implemented and report.rows_in == report.rows_out == len(df)  # type: ignore[arg-type]
    # a model stage: the model and the report, no pass-through manifest
    assert sorted(p.name for p in (tmp_path / "step").iterdir()) == ["report.json"]
    assert set(report.metrics["variants"]) == {"fp32_torch", "fp32_onnx", "int8_onnx"}
    client = MlflowClient(tracking_uri=cfg.mlflow.tracking_uri)
    run = client.get_run(run_id)
    assert "compress.variants.int8_onnx.recall_at_1" in run.data.metrics
    logged = {a.path for a in client.list_artifacts(run_id, "compress")}
    assert logged == {"compress/variants.json", "compress/variants.md"}
