"""Near duplicates on real photographs (bench/photoset.py: shipped sample photos, tiled into
distinct images, seven variant kinds each), scored as bench curate_quality scores them.

The peers (imagededup PHash, cleanvision) run beside pairflow in ``bench curate_quality``;
this test holds pairflow's own figures against the goal: recall >= 0.95 at precision >= 0.99,
on the dev set (seed 0) and on two more draws of it (other tiles' variants and strengths).
Measured: 0.973 / 0.954 / 0.970 at precision 1.0; imagededup PHash at its default
threshold reaches 0.90 on seed 0 (bench/results/curate_quality.json).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.curate_quality import pairflow_links, score_links
from bench.photoset import build_photoset

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_real_photo_near_duplicates(tmp_path: Path, seed: int) -> None:
    photos = build_photoset(tmp_path / "photos", seed=seed)
    links, facts = pairflow_links(photos)
    scores = score_links(photos, links)
    summary = f"{scores} {facts['near']}"
    assert scores["true_pairs"] > 2000, summary
    assert scores["precision"] >= 0.99, summary
    assert scores["recall"] >= 0.95, summary
    per_variant = scores["recall_per_variant"]
    # re-encodes, resizes, format changes and upscales are found almost always
    for kind in ("resize", "jpeg", "format", "upscale"):
        assert per_variant[kind] >= 0.95, summary
    # the photometric path finds brightness/contrast changes the colour layout cannot
    assert per_variant["brightness"] >= 0.95, summary
    # a one-sided crop or a corner caption box moves every hash most; most are still found
    for kind in ("crop", "overlay"):
        assert per_variant[kind] >= 0.85, summary
