"""The ``dedupe`` section: exact, near and caption duplicates."""

from __future__ import annotations

from pydantic import Field

from pairflow.config_fields import Section, ui


class DedupeConfig(Section):
    """Exact, perceptual and caption duplicates; which copy survives is deterministic."""

    exact: bool = ui(True, "Exact duplicates", "Drop byte-identical images.")
    near: bool = ui(True, "Near duplicates", "Drop perceptual-hash near duplicates.")
    phash_max_distance: int = ui(
        8,
        "Near-duplicate distance",
        "Max Hamming distance of 64-bit layout hashes (full frame or centre crop).",
        ge=0,
        le=16,
    )
    near_layout_max_rms: float = Field(
        2.9,
        gt=0,
        description="Hash candidates are near duplicates when their colour-layout RMS distance "
        "is at most this (tuned on the generator: recall 96% at 0 false positives, 600 rows).",
    )
    near_photometric: bool = Field(
        True,
        description="Also accept DCT-hash candidates that differ by brightness/contrast, "
        "a small overlay or crop (pairflow.stages.dedupe.near.PhotometricRule; real photographs).",
    )
    captions: bool = ui(
        True, "Duplicate captions", "Drop rows whose normalised caption repeats another's."
    )
    near_captions: bool = Field(False, description="Also MinHash-LSH near-duplicate captions.")
    minhash_threshold: float = Field(0.9, gt=0, le=1, description="Jaccard threshold.")
    minhash_num_perm: int = Field(64, ge=16, le=512)
    embeddings: bool = Field(
        False, description="SemDeDup on CLIP embeddings (needs clip-filter embeddings)."
    )
    embedding_epsilon: float = Field(0.05, gt=0, lt=1, description="Drop cosine > 1 - eps.")
    embedding_clusters: int = Field(16, ge=1)
    threads: int = Field(
        0,
        ge=0,
        description="Threads for the near-duplicate index and its verification "
        "(0: every CPU the step may use).",
    )
