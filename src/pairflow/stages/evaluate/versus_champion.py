"""The candidate's latency against the champion's, before anything is compressed.

The evaluate gate reports it so a reviewer sees the speed question next to the quality one:
the trained (fp32 torch) candidate and the champion's *shipped* variant are timed in one
fresh process, interleaved, at ``compress.selection_batch_size`` on the same held-out batch
(:func:`pairflow.models.latency.measure_saved_latency`, the code path compress uses). It
is a report: the budget itself (``compress.max_slowdown_vs_champion``) is enforced by
compress on the variant that would ship, which is usually faster than the fp32 candidate.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from pairflow.config import CompressConfig, S3Config
from pairflow.errors import InputDataError
from pairflow.models.latency import load_held_out, measure_saved_latency
from pairflow.models.open import open_model

CANDIDATE, CHAMPION = "candidate_fp32_torch", "champion_shipped"


@dataclass(frozen=True)
class LatencyVersusChampion:
    """p50/p95 (ms) of one pair request at ``batch_size`` for both models, timed together."""

    batch_size: int
    candidate_p50_ms: float
    candidate_p95_ms: float
    champion_p50_ms: float
    champion_p95_ms: float
    champion_variant: str
    repeats: int
    max_slowdown: float | None

    @property
    def ratio(self) -> float:
        """Candidate p50 over champion p50 (above 1: the candidate is slower)."""
        return self.candidate_p50_ms / self.champion_p50_ms

    def reason(self) -> str:
        budget = (
            f"compress ships only a variant within +{self.max_slowdown:.0%} of the champion"
            if self.max_slowdown is not None
            else "no latency budget (compress.max_slowdown_vs_champion unset)"
        )
        return (
            f"INFO latency at batch {self.batch_size}: candidate (fp32 torch, before "
            f"compression) p50 {self.candidate_p50_ms:.2f} ms, p95 {self.candidate_p95_ms:.2f} "
            f"ms vs champion ({self.champion_variant}) p50 {self.champion_p50_ms:.2f} ms, p95 "
            f"{self.champion_p95_ms:.2f} ms: {self.ratio:.2f}x; not gated here, {budget}"
        )

    def check(self) -> dict[str, Any]:
        return {
            "check": "latency",
            "batch_size": self.batch_size,
            "candidate_p50_ms": round(self.candidate_p50_ms, 3),
            "candidate_p95_ms": round(self.candidate_p95_ms, 3),
            "champion_p50_ms": round(self.champion_p50_ms, 3),
            "champion_p95_ms": round(self.champion_p95_ms, 3),
            "champion_variant": self.champion_variant,
            "ratio": round(self.ratio, 3),
            "repeats": self.repeats,
            "interleaved": True,
            "max_slowdown": self.max_slowdown,
            "gated": False,
            "passed": True,
        }


def latency_versus_champion(
    model_dir: str | Path,
    frame: pd.DataFrame,
    champion: tuple[Path, str],
    cfg: CompressConfig,
    *,
    s3: S3Config | None = None,
) -> LatencyVersusChampion:
    """Time the trained model in ``model_dir`` and the champion's shipped variant
    (``champion``: folder, kind) on up to ``cfg.selection_batch_size`` rows of ``frame``."""
    loaded = open_model(model_dir, variant="torch", s3=s3)
    size = cfg.selection_batch_size
    held = load_held_out(frame, loaded.processor, loaded.max_text_length, max_rows=size, s3=s3)
    if held.rows < 1:
        raise InputDataError(f"no readable rows among {len(frame)} to time the candidate on")
    folder, kind = champion
    latency, _ = measure_saved_latency(
        {CANDIDATE: (Path(model_dir), "torch"), CHAMPION: (folder, kind)},
        held,
        [size],
        cfg.latency_threads,
        cfg.latency_repeats,
    )
    cand, champ = latency[CANDIDATE][str(size)], latency[CHAMPION][str(size)]
    return LatencyVersusChampion(
        batch_size=size,
        candidate_p50_ms=float(cand["p50_ms"]),
        candidate_p95_ms=float(cand["p95_ms"]),
        champion_p50_ms=float(champ["p50_ms"]),
        champion_p95_ms=float(champ["p95_ms"]),
        champion_variant=folder.name,
        repeats=cfg.latency_repeats,
        max_slowdown=cfg.max_slowdown_vs_champion,
    )
