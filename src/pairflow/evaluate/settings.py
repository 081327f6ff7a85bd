"""Config section of this stage (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from pairflow.config_fields import Section, ui


class EvaluateConfig(Section):
    min_recall_at_1: float = ui(
        0.0, "Min recall@1", "Absolute floor on held-out image-to-text recall@1.", ge=0, le=1
    )
    holdout_fraction: float = 0.2
