"""A champion and a logged window for monitor tests: version 1 of a model in a real MLflow
store whose run holds a serving reference (as evaluate + register leave it) and a training
dataset input (lineage), and served pairs written in the sink's layout (``write_parts``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from pairflow.data.schema import write_manifest
from pairflow.drift.reference import Reference, write_reference
from pairflow.registry.champion import SERVING_REFERENCE_ARTIFACT
from pairflow.serve.requestlog.records import to_table
from pairflow.serve.requestlog.sink_store import write_parts

END = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
DIM = 8


def _unit(rng: np.random.Generator, centre: np.ndarray, n: int) -> np.ndarray:
    m = centre + 0.15 * rng.standard_normal((n, DIM))
    out: np.ndarray = m / np.linalg.norm(m, axis=1, keepdims=True)
    return out


def _png(path: Path, colour: tuple[int, int, int]) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (48, 48), colour).save(path)
    return path


def register_champion(uri: str, tmp_path: Path, name: str) -> None:
    """Version 1 of ``name`` aliased champion: its run holds the serving reference (what
    evaluate + register leave) and the training dataset input (lineage)."""
    from mlflow.tracking import MlflowClient

    from pairflow.data.split import split_holdout
    from pairflow.registry.client import Registry
    from pairflow.stages.register import lineage

    rng = np.random.default_rng(0)
    n = 120
    frame = pd.DataFrame(
        {
            "id": [f"ref{i}" for i in range(n)],
            "caption_chars": rng.integers(14, 20, n).astype("int64"),
            "caption_tokens": np.full(n, 3, dtype="int64"),
            "width": pd.array(np.full(n, 64), dtype="Int64"),
            "height": pd.array(np.full(n, 64), dtype="Int64"),
            "clip_score": rng.normal(0.3, 0.02, n).astype("float32"),
            "label": pd.array(["circle"] * n, dtype="string"),
        }
    )
    centre = np.eye(DIM)[0]
    ref = Reference(
        frame,
        image=_unit(rng, centre, n).astype(np.float16),
        text=_unit(rng, centre, n).astype(np.float16),
        meta={"model_digest": "d", "embedded_ids": n},
    )
    ref_file = write_reference(tmp_path / "ref" / "serving_reference.parquet", ref)
    curated = pd.DataFrame(
        {
            "id": [f"old{i}" for i in range(10)],
            "image": [str(_png(tmp_path / "old" / f"{i}.png", (255, 0, 0))) for i in range(10)],
            "caption": ["a red circle"] * 10,
            "label": ["circle"] * 10,
            "source": ["drop-1"] * 10,
        }
    )
    kept = write_manifest(curated, tmp_path / "run" / "kept")
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.create_experiment(f"retrain-{tmp_path.name}")
    run_id = client.create_run(exp).info.run_id
    client.log_artifact(run_id, str(ref_file), str(Path(SERVING_REFERENCE_ARTIFACT).parent))
    train, hold = split_holdout(curated, 0.2)
    lineage.log_datasets(
        Registry(uri),
        run_id,
        {"training": (train, "train"), "evaluation": (hold, "holdout")},
        source=str(kept),
    )
    client.create_registered_model(name)
    client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
    client.set_registered_model_alias(name, "champion", "1")


def log_window(prefix: Path, n: int, shifted: bool) -> None:
    """``n`` served pairs of v1 in the hour before END, as the sink writes them."""
    rng = np.random.default_rng(1 if shifted else 2)
    centre = np.eye(DIM)[1 if shifted else 0]
    image, text = _unit(rng, centre, n), _unit(rng, centre, n)
    rows = []
    for i in range(n):
        colour = (0, 128, 128) if shifted else (255, 0, 0)
        img = _png(prefix / "images" / f"{i:02d}{int(shifted)}.png", colour)
        caption = f"{i % 4 + 2} teal stars in a row" if shifted else "a red circle"
        rows.append(
            {
                "request_id": f"{'s' if shifted else 'u'}{i}",
                "instance": 0,
                "ts": END - timedelta(minutes=30, seconds=i),
                "model_name": "pairflow",
                "model_version": "1",
                "task": "score",
                "image_sha256": f"{i:02d}{int(shifted)}",
                "image_bytes": 300,
                "image_format": "PNG",
                "width": 48 if shifted else 64,
                "height": 48 if shifted else 64,
                "image_uri": str(img),
                "caption": caption,
                "caption_chars": len(caption),
                "caption_tokens": len(caption.split()),
                "score": float(rng.normal(0.18 if shifted else 0.3, 0.02)),
                "image_emb": image[i],
                "text_emb": text[i],
            }
        )
    write_parts(str(prefix), to_table(rows, DIM))
