"""CLIP image-text filter: load a CLIP by reference, score pairs in batches, keep agreeing ones.

- :mod:`~pairflow.clipfilter.model`: ``load_clip(ref)`` for a directory, HF id, ``s3://``
  prefix or ``models:/NAME@ALIAS`` (safetensors only, nothing from a hub when offline);
- :mod:`~pairflow.clipfilter.scoring`: ``score_frame`` (DataLoader workers decode and
  preprocess while the model runs; score = cosine of normalised embeddings);
- :mod:`~pairflow.clipfilter.select`: threshold / top fraction / per-source rules;
- :mod:`~pairflow.clipfilter.artifacts`: embeddings Parquet, score histogram, Markdown;
- :mod:`~pairflow.clipfilter.run`: ``run_filter``, the stage over one shard's manifest;
- :mod:`~pairflow.clipfilter.bootstrap`: the demo's tiny reference CLIP, trained locally.
"""

from __future__ import annotations

from pairflow.clipfilter.bootstrap import ensure_reference_clip, pretrain_reference_clip
from pairflow.clipfilter.model import LoadedClip, ModelLoadError, load_clip
from pairflow.clipfilter.run import FilterOutputs, FilterResult, run_filter

__all__ = [
    "FilterOutputs",
    "FilterResult",
    "LoadedClip",
    "ModelLoadError",
    "ensure_reference_clip",
    "load_clip",
    "pretrain_reference_clip",
    "run_filter",
]
