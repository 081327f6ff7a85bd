"""Standalone ``validate``/``dedupe`` read ``--input`` as ingest does: relative manifests,
folders and WebDataset shards, with ingest's rejects carried into the stage's outputs."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from pairflow.cli import app


def _jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    img = Image.fromarray(arr, "RGB").resize((96, 96), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _run(args: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, object]]:
    res = CliRunner().invoke(app, args)
    out = Path(args[args.index("--out") + 1])
    assert (out / "report.json").exists(), res.output
    report: dict[str, object] = json.loads((out / "report.json").read_text())
    kept = pd.read_parquet(out / "kept.parquet")
    rejected = pd.read_parquet(out / "rejected.parquet")
    assert report["rows_in"] == len(kept) + len(rejected)
    return kept, rejected, report


@pytest.fixture()
def relative_manifest(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    (data / "img").mkdir(parents=True)
    rows = []
    for k in range(4):
        (data / "img" / f"{k}.jpg").write_bytes(_jpeg(k))
        rows.append({"id": f"r{k}", "image": f"img/{k}.jpg", "caption": f"a photo number {k}"})
    rows.append({"id": "r0", "image": "img/1.jpg", "caption": "same id again"})
    rows.append({"id": "gone", "image": "img/missing.jpg", "caption": "no such file here"})
    pd.DataFrame(rows).to_json(data / "manifest.jsonl", orient="records", lines=True)
    return data / "manifest.jsonl"


def test_validate_resolves_relative_manifest(relative_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "v"
    kept, rejected, report = _run(
        ["validate", "--input", str(relative_manifest), "--out", str(out)]
    )
    assert sorted(kept["id"]) == ["r0", "r1", "r2", "r3"]
    reasons = dict(zip(rejected["id"], rejected["reason"], strict=True))
    assert reasons == {"r0": "duplicate_id", "gone": "missing_file"}
    assert report["rejected"] == {"duplicate_id": 1, "missing_file": 1}
    assert all(Path(p).is_absolute() for p in kept["image"])
    # a stage's own output reads back unchanged: dedupe finds the signature columns
    kept2, _, report2 = _run(
        ["dedupe", "--input", str(out / "kept.parquet"), "--out", str(tmp_path / "d")]
    )
    assert report2["rows_in"] == 4 and len(kept2) == 4


def test_validate_reads_folder_and_webdataset(tmp_path: Path) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tf:
        for k in range(3):
            for name, payload in ((f"k{k}.jpg", _jpeg(10 + k)), (f"k{k}.txt", b"a caption")):
                (folder / name).write_bytes(payload)
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tf.addfile(info, io.BytesIO(payload))
    for source in (folder, shard):
        kept, rejected, _ = _run(
            ["validate", "--input", str(source), "--out", str(tmp_path / f"v-{source.name}")]
        )
        assert len(kept) == 3 and len(rejected) == 0, rejected.to_dict("records")
        assert {"width", "height", "img_sha256"} <= set(kept.columns)
