"""Near-duplicate quality on real photographs: pairflow beside imagededup and cleanvision.

The dev set is :mod:`bench.photoset` (shipped sample photos, tiled into distinct images, each
with seven near-duplicate variants). Every tool sees the same files:

- pairflow: the manifest read as ingest reads it, then ``validate`` (decode + signatures) and
  ``dedupe`` with default settings;
- imagededup ``PHash`` at its default ``max_distance_threshold`` (10);
- cleanvision ``Imagelab`` ``near_duplicates`` (and ``exact_duplicates``) at defaults.

Scoring is pair based on clusters: each tool's duplicate links are closed transitively (what
a user removing all but one per cluster gets); precision = true pairs among clustered pairs,
recall = clustered pairs among true pairs. Per variant: share of variants clustered with
their original. Writes ``bench/results/curate_quality.json``.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from bench.common import write_result
from bench.photoset import VARIANTS, PhotoSet, build_photoset

STAGE = "curate"


class _Clusters:
    """Union-find over ids."""

    def __init__(self, ids: Iterable[str]) -> None:
        self.parent = {i: i for i in ids}

    def find(self, x: str) -> str:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def score_links(photos: PhotoSet, links: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Cluster precision/recall/F1 of duplicate ``links`` (id pairs) against the ground truth."""
    frame = photos.frame
    clusters = _Clusters(frame["id"])
    for a, b in links:
        clusters.union(a, b)
    members: dict[str, list[str]] = {}
    for i in frame["id"]:
        members.setdefault(clusters.find(i), []).append(i)
    predicted = {
        (a, b) if a < b else (b, a)
        for group in members.values()
        for k, a in enumerate(group)
        for b in group[k + 1 :]
    }
    truth = photos.true_pairs()
    hits = len(predicted & truth)
    precision = hits / len(predicted) if predicted else 1.0
    recall = hits / len(truth)
    f1 = 2 * precision * recall / (precision + recall) if hits else 0.0
    originals = frame[frame["variant"] == "original"]
    original = dict(zip(originals["group"], originals["id"], strict=True))
    per_variant = {}
    for kind in VARIANTS:
        rows = frame[frame["variant"] == kind]
        same = [
            clusters.find(i) == clusters.find(original[g])
            for i, g in zip(rows["id"], rows["group"], strict=True)
        ]
        per_variant[kind] = round(sum(same) / len(same), 3) if same else None
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "true_pairs": len(truth),
        "clustered_pairs": len(predicted),
        "recall_per_variant": per_variant,
    }


def pairflow_links(photos: PhotoSet) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """Duplicate links found by pairflow's validate + dedupe on the photo manifest."""
    from pairflow.config import DedupeConfig, ValidateConfig
    from pairflow.data.admit import split_rejects
    from pairflow.data.sources import load_source
    from pairflow.stages.dedupe.merge import dedupe_frame
    from pairflow.stages.validate.rows import validate_frame

    source, _ = load_source(str(photos.root / "manifest.jsonl"))
    rows, ingest_rejected, _ = split_rejects(source)
    if len(ingest_rejected):
        raise RuntimeError(f"ingest rejected photo rows: {ingest_rejected.to_dict('records')}")
    validated = validate_frame(rows, ValidateConfig())
    if len(validated.rejected):
        reasons = validated.rejected[["id", "reason"]].to_dict("records")
        raise RuntimeError(f"validate rejected photo rows: {reasons}")
    result = dedupe_frame(validated.kept, DedupeConfig())
    rej = result.rejected
    image = rej["reason"].isin(["exact_duplicate", "near_duplicate"])
    links = list(zip(rej.loc[image, "id"], rej.loc[image, "duplicate_of"], strict=True))
    return [(str(a), str(b)) for a, b in links], {
        "near": result.metrics.get("near", {}),
        "counts": result.counts,
    }


def imagededup_links(photos: PhotoSet) -> list[tuple[str, str]]:
    """imagededup PHash at its default threshold, recursive over the photo folder."""
    from imagededup.methods import PHash

    by_path = dict(zip(photos.frame["image"], photos.frame["id"], strict=True))
    hasher = PHash(verbose=False)
    encodings = hasher.encode_images(image_dir=str(photos.root), recursive=True)
    found = hasher.find_duplicates(encoding_map=encodings)
    links = []
    for name, dups in found.items():
        for other in dups:
            if name in by_path and other in by_path:
                links.append((by_path[name], by_path[other]))
    return links


def cleanvision_links(photos: PhotoSet) -> list[tuple[str, str]]:
    """cleanvision Imagelab exact + near duplicate sets at default settings."""
    from cleanvision import Imagelab

    paths = [str(photos.root / p) for p in photos.frame["image"]]
    by_path = dict(zip(paths, photos.frame["id"], strict=True))
    lab = Imagelab(filepaths=paths)
    lab.find_issues({"exact_duplicates": {}, "near_duplicates": {}}, verbose=False)
    links: list[tuple[str, str]] = []
    for kind in ("exact_duplicates", "near_duplicates"):
        for group in lab.info[kind]["sets"]:
            ids = [by_path[str(p)] for p in group]
            links.extend((ids[0], other) for other in ids[1:])
    return links


def run(limit: int | None = None, seed: int = 0) -> dict[str, Any]:
    """Build the set under a temporary folder and score the three tools on it."""
    with tempfile.TemporaryDirectory(prefix="pairflow-photos-") as tmp:
        photos = build_photoset(Path(tmp), seed=seed, limit=limit)
        tools: dict[str, Any] = {}
        t = time.perf_counter()
        links, facts = pairflow_links(photos)
        tools["pairflow"] = {
            **score_links(photos, links),
            "seconds": round(time.perf_counter() - t, 2),
            **facts,
        }
        peers = (("imagededup_phash", imagededup_links), ("cleanvision", cleanvision_links))
        for name, fn in peers:
            t = time.perf_counter()
            tools[name] = {
                **score_links(photos, fn(photos)),
                "seconds": round(time.perf_counter() - t, 2),
            }
        return {
            "dataset": {
                "files": len(photos.frame),
                "groups": int(photos.frame["group"].nunique()),
                "variants": list(VARIANTS),
                "seed": seed,
                "sources": "skimage.data, sklearn load_sample_images, matplotlib grace_hopper",
            },
            "tools": tools,
        }


def main() -> None:
    limit = os.environ.get("PAIRFLOW_BENCH_PHOTOS")
    result = run(limit=int(limit) if limit else None)
    goal = {"recall_min": 0.95, "precision_min": 0.99}
    pf = result["tools"]["pairflow"]
    peers = {k: v["f1"] for k, v in result["tools"].items() if k != "pairflow"}
    result["goal"] = {
        **goal,
        "met_recall_precision": pf["recall"] >= goal["recall_min"]
        and pf["precision"] >= goal["precision_min"],
        "f1_above_peers": all(pf["f1"] > f for f in peers.values()),
        "recall_short_by": round(max(0.0, goal["recall_min"] - pf["recall"]), 4),
    }
    result["notes"] = (
        "pairflow's near-duplicate check was a colour layout (absolute levels) fitted to the "
        "generator; on photos it missed brightness/contrast changes, overlays and one-sided "
        "crops (recall 0.32). The photometric path (dedupe.near_photometric) adds a DCT hash "
        "of the layout luma with a gain/offset-compensated layout check (0.79), and a 32x32 "
        "grey pHash (img_phash, the recipe imagededup's PHash uses) verified the same way, "
        "which finds brightness changes of low-contrast photos and most overlays and crops. "
        "Its limits come from a grid over every pair of this set and ten generator seeds; the "
        "generator's flat backgrounds made distinct scenes differ by no more than a "
        "brightness change does, so it now renders shaded backgrounds. What stays missed: "
        "one-sided crops and corner overlays of near-textureless tiles (brick, hubble), whose "
        "hashes move most and whose layouts are too flat to verify safely."
    )
    result["load_average"] = list(os.getloadavg())
    out = write_result("curate_quality", result)
    print(pd.DataFrame(result["tools"]).loc[["precision", "recall", "f1"]].to_string())
    print(f"-> {out}")


if __name__ == "__main__":
    main()
