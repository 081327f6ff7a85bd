"""Reading images out of WebDataset tars: pairflow's indexed reads vs. tarfile lookups.

Baseline: ``tarfile.open(...).extractfile(member)`` per image, which is what a naive reader of
``<tar>#<member>`` URIs does (each open scans the tar headers up to the member).
pairflow: :func:`pairflow.data.imageio.read_image_bytes`, which indexes each tar once and
then seeks straight to the member.
"""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import Any

from bench.common import time_repeated, write_result
from pairflow.data.export import export_as
from pairflow.data.imageio import clear_caches, read_image_bytes, split_tar_member
from pairflow.data.sources import read_source
from pairflow.demo.synthetic import generate_dataset

STAGE = "ingest"


def _naive_read(uri: str) -> bytes:
    parts = split_tar_member(uri)
    assert parts is not None
    tar_path, member = parts
    with tarfile.open(tar_path) as tar:
        fh = tar.extractfile(member)
        assert fh is not None
        return fh.read()


def run(n: int = 600, rows_per_shard: int = 300) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        gen = generate_dataset(root / "data", n, seed=1, defects=False)
        manifest = read_source(str(gen.manifest), "parquet")
        wds = export_as(manifest, "webdataset", root / "wds", rows_per_shard=rows_per_shard)
        uris = list(read_source(str(wds), "webdataset")["image"])

        def indexed() -> None:
            clear_caches()
            for uri in uris:
                read_image_bytes(uri)

        def naive() -> None:
            for uri in uris:
                _naive_read(uri)

        assert all(read_image_bytes(u) == _naive_read(u) for u in uris[:50])
        ours = time_repeated(indexed, 3)
        base = time_repeated(naive, 1, warmup=False)  # slow: one pass is enough
    return {
        "rows": n,
        "rows_per_shard": rows_per_shard,
        "pairflow_indexed": {**ours, "images_per_s": n / ours["median_s"]},
        "baseline_tarfile_lookup": {**base, "images_per_s": n / base["median_s"]},
        "speedup": base["median_s"] / ours["median_s"],
    }


def main() -> None:
    result = run()
    out = write_result("ingest_tar_reads", result)
    print(
        f"tar reads: pairflow {result['pairflow_indexed']['images_per_s']:.0f} img/s, "
        f"baseline {result['baseline_tarfile_lookup']['images_per_s']:.0f} img/s, "
        f"speedup {result['speedup']:.1f}x → {out}"
    )


if __name__ == "__main__":
    main()
