"""Drift accuracy of the monitor: false alarms on same-distribution traffic, detection of a
shifted source, each over >= 20 seeded windows.

Set-up, as in production but small:

- a tiny CLIP pretrained here on clean synthetic pairs (:func:`pretrain_reference_clip`);
- its serving reference, made by evaluate's own code
  (:func:`pairflow.stages.evaluate.serving_reference.build_serving_reference`) from ``REF_ROWS``
  clean rows embedded by the fp32 model;
- the served model: the same model's int8 dynamic-quantized ONNX towers (what compress ships
  by default), loaded as ``pairflow serve`` loads a variant, so the windows carry the
  shipped variant's embeddings and scores, not the fp32 ones;
- each window: ``WINDOW_ROWS`` rows from the generator with a new seed, either the same
  distribution (``shift=False``) or a new source with a disjoint colour palette
  (``shift=True``), decoded and embedded as the predictor does, written as logged-request
  records (:func:`pairflow.serve.requestlog.records.to_table`) and judged by
  :func:`pairflow.stages.monitor.drift.judge_window` with the default ``monitor`` settings.

Reported: both rates with their windows' figures (drift share, AUC per tower, score drop),
the fp32-vs-int8 domain-classifier AUC on identical rows (how far the shipped variant's
embeddings are from the reference's), and the thresholds used. Written to
``bench/results/monitor_drift_accuracy.json``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.common import write_result

STAGE = "monitor"
SEEDS = 20
WINDOW_ROWS = 200
REF_ROWS = 400
MODEL_SEED = 4321
REF_SEED = 9001
SAME_SEED0 = 10_000
SHIFT_SEED0 = 20_000


@dataclass
class Served:
    """An embedder as the predictor holds it (``pairflow.models.open``)."""

    name: str
    model: Any  # ServableModel


def tiny_clip(out_dir: Path, n: int = 1500, epochs: int = 4) -> Path:
    """A tiny CLIP pretrained on ``n`` clean pairs (seed ``MODEL_SEED``)."""
    from pairflow.demo.reference_clip import pretrain_reference_clip

    return pretrain_reference_clip(out_dir, n=n, seed=MODEL_SEED, epochs=epochs)


def int8_variant(model_dir: Path, out_dir: Path) -> Path:
    """The model's towers exported to ONNX and int8 dynamic-quantized as compress does."""
    import shutil

    import torch

    from pairflow.models.export import export_towers
    from pairflow.models.open import open_model
    from pairflow.stages.compress.quantize import quantize_dynamic_file
    from pairflow.stages.compress.settings import CompressConfig

    cfg = CompressConfig()
    clip = open_model(model_dir, variant="torch").clip
    fp32 = out_dir / "onnx-fp32"
    size = int(clip.processor.image_processor.crop_size["height"])
    enc = clip.processor.tokenizer(["a small red circle"], return_tensors="pt")
    export_towers(
        clip.model,
        fp32,
        torch.zeros(2, 3, size, size),
        enc["input_ids"].repeat(2, 1),
        enc["attention_mask"].repeat(2, 1),
    )
    clip.processor.save_pretrained(str(fp32))
    int8 = out_dir / "onnx-int8"
    int8.mkdir(parents=True, exist_ok=True)
    for f in sorted(fp32.iterdir()):
        if f.suffix == ".onnx":
            quantize_dynamic_file(f, int8 / f.name, cfg.int8_op_types, cfg.per_channel)
        elif f.is_file():
            shutil.copyfile(f, int8 / f.name)
    return int8


def served_models(model_dir: Path, int8_dir: Path) -> tuple[Served, Served]:
    """(fp32 torch, int8 ONNX) as ``pairflow serve`` loads them."""
    from pairflow.models.open import open_model

    fp32 = Served("torch-fp32", open_model(model_dir, variant="torch").model)
    onnx = Served("onnx-int8", open_model(int8_dir, threads=1).model)
    return fp32, onnx


def generate(out_dir: Path, n: int, seed: int, shift: bool) -> pd.DataFrame:
    """Clean synthetic rows (absolute image paths)."""
    from pairflow.data.sources import read_source
    from pairflow.demo.synthetic import generate_dataset

    gen = generate_dataset(out_dir, n, seed=seed, defects=False, shift=shift)
    return read_source(str(gen.manifest), "parquet")


def serving_reference(model_dir: Path, frame: pd.DataFrame) -> Any:
    """Evaluate's serving reference of ``frame`` (all rows as the held-out part)."""
    from pairflow.models.open import open_model
    from pairflow.stages.evaluate.scoring import score_holdout
    from pairflow.stages.evaluate.serving_reference import build_serving_reference

    clip = open_model(model_dir, variant="torch").clip
    scores = score_holdout(clip, frame, [])
    return build_serving_reference(clip, frame, scores, frame.iloc[:0], train_sample=0, seed=0)


def embed(served: Served, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """(image, text) embeddings and decoded images of ``frame``, as the predictor makes them."""
    from pairflow.data.decode import decode_image

    decoded = [decode_image(Path(str(p)).read_bytes()) for p in frame["image"]]
    images = [d.image for d in decoded]
    captions = [str(c) for c in frame["caption"]]
    img = np.asarray(served.model.embed_images(images), dtype=np.float32)
    txt = np.asarray(served.model.embed_texts(captions), dtype=np.float32)
    return img, txt, decoded


def records(served: Served, frame: pd.DataFrame, version: str, start: datetime) -> Any:
    """The window's logged-request records, one per scored pair (what the sink writes)."""
    from pairflow.serve.requestlog.records import to_table

    img, txt, decoded = embed(served, frame)
    rows = []
    for i, (caption, d) in enumerate(zip(frame["caption"], decoded, strict=True)):
        rows.append(
            {
                "request_id": f"req-{start.timestamp():.0f}-{i}",
                "instance": 0,
                "ts": start + timedelta(seconds=i),
                "model_name": "pairflow-clip",
                "model_version": version,
                "task": "score",
                "width": d.image.width,
                "height": d.image.height,
                "caption": str(caption),
                "caption_chars": len(str(caption)),
                "caption_tokens": len(str(caption).split()),
                "score": float(np.dot(img[i], txt[i])),
                "image_emb": img[i],
                "text_emb": txt[i],
            }
        )
    return to_table(rows, int(img.shape[1]))


def _summary(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {
        "min": float(arr.min()),
        "median": float(np.median(arr)),
        "max": float(arr.max()),
    }


def measure(
    work: Path,
    *,
    seeds: int = SEEDS,
    window_rows: int = WINDOW_ROWS,
    ref_rows: int = REF_ROWS,
    model_dir: Path | None = None,
    model_note: str = "tiny CLIP pretrained here (1500 pairs, 4 epochs)",
) -> dict[str, Any]:
    """Run both arms over ``seeds`` windows each; return rates and per-window figures.

    ``model_dir``: the CLIP to use (default: :func:`tiny_clip`), described by ``model_note``.
    """
    from pairflow.drift.compare import embedding_auc
    from pairflow.stages.monitor.drift import judge_window
    from pairflow.stages.monitor.reference import ChampionReference
    from pairflow.stages.monitor.settings import MonitorConfig
    from pairflow.stages.monitor.verdict import WindowId

    t0 = time.perf_counter()
    model = model_dir or tiny_clip(work / "clip")
    fp32, int8 = served_models(model, int8_variant(model, work / "variants"))
    ref_frame = generate(work / "ref", ref_rows, REF_SEED, shift=False)
    champion = ChampionReference("pairflow-clip", "1", "bench", serving_reference(model, ref_frame))
    cfg = MonitorConfig(min_window_rows=min(window_rows, MonitorConfig().min_window_rows))
    setup_s = time.perf_counter() - t0
    # how far the shipped int8 variant's embeddings are from fp32's, on identical rows
    same_rows = generate(work / "parity", window_rows, SAME_SEED0 - 1, shift=False)
    a_img, a_txt, _ = embed(fp32, same_rows)
    b_img, b_txt, _ = embed(int8, same_rows)
    parity = {
        "rows": len(same_rows),
        "auc_fp32_vs_int8": {
            "image": embedding_auc(a_img.astype(np.float16), b_img.astype(np.float16), seed=0),
            "text": embedding_auc(a_txt.astype(np.float16), b_txt.astype(np.float16), seed=0),
        },
        "mean_cosine_fp32_int8": {
            "image": float(np.mean(np.sum(a_img * b_img, axis=1))),
            "text": float(np.mean(np.sum(a_txt * b_txt, axis=1))),
        },
        "mean_abs_score_diff": float(
            np.mean(np.abs(np.sum(a_img * a_txt, axis=1) - np.sum(b_img * b_txt, axis=1)))
        ),
    }
    arms: dict[str, Any] = {}
    t1 = time.perf_counter()
    base = datetime(2026, 1, 1, tzinfo=UTC)
    for arm, shift, seed0 in (("same", False, SAME_SEED0), ("shifted", True, SHIFT_SEED0)):
        windows: list[dict[str, Any]] = []
        for k in range(seeds):
            seed = seed0 + k
            start = base + timedelta(days=k)
            frame = generate(work / f"{arm}-{k}", window_rows, seed, shift=shift)
            table = records(int8, frame, "1", start)
            win = WindowId(
                start.isoformat(), (start + timedelta(hours=24)).isoformat(), "pairflow-clip", "1"
            )
            v = judge_window(table, champion, cfg, win, work / "html" / f"{arm}-{k}.html")
            if not v.judged:
                raise RuntimeError(f"{arm} window {k} not judged: {v.reasons}")
            windows.append(
                {
                    "seed": seed,
                    "drift": v.drift,
                    "drift_share": v.drift_share,
                    "drifted_columns": v.drifted_columns,
                    "auc_image": v.embedding_auc.get("image"),
                    "auc_text": v.embedding_auc.get("text"),
                    "score_drop": v.score_drop,
                }
            )
        rate = float(np.mean([w["drift"] for w in windows]))
        arms[arm] = {
            "windows": len(windows),
            "drift_rate": rate,
            "auc_image": _summary([w["auc_image"] for w in windows]),
            "auc_text": _summary([w["auc_text"] for w in windows]),
            "drift_share": _summary([w["drift_share"] for w in windows]),
            "score_drop": _summary([w["score_drop"] for w in windows]),
            "per_window": windows,
        }
    return {
        "setup": {
            "model": model_note,
            "reference": f"{ref_rows} rows embedded by the fp32 model (evaluate's code)",
            "served": "int8 dynamic ONNX towers (compress's default shipped kind)",
            "window_rows": window_rows,
            "seeds_per_arm": seeds,
            "shift": "generator shift=True: disjoint palette SHIFT_COLOURS",
        },
        "thresholds": {
            "drift_share": cfg.drift_share,
            "embedding_auc": cfg.embedding_auc,
            "score_drop_margin": cfg.score_drop_margin,
        },
        "false_alarm_rate": arms["same"]["drift_rate"],
        "detection_rate": arms["shifted"]["drift_rate"],
        "goals": {"false_alarm_rate_max": 0.05, "detection_rate_min": 0.95},
        "fp32_vs_int8": parity,
        "arms": arms,
        "seconds": {
            "setup": round(setup_s, 2),
            "windows": round(time.perf_counter() - t1, 2),
            "per_window": round((time.perf_counter() - t1) / (2 * seeds), 3),
        },
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pairflow-bench-monitor-") as tmp:
        result = measure(Path(tmp))
    out = write_result("monitor_drift_accuracy", result)
    print(
        f"monitor drift accuracy: false alarms {result['false_alarm_rate']:.2%} "
        f"(goal <= 5%), detection {result['detection_rate']:.2%} (goal >= 95%) over "
        f"{result['setup']['seeds_per_arm']} windows each; fp32 vs int8 AUC "
        f"{result['fp32_vs_int8']['auc_fp32_vs_int8']}; {out}"
    )


if __name__ == "__main__":
    main()
