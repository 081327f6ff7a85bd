"""Config section of the model server (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from pydantic import Field

from pairflow.config_fields import Section


class ServeConfig(Section):
    """The predictor: batching and request limits (used locally and in the serving image)."""

    max_batch_size: int = Field(32, ge=1, description="Largest micro-batch the predictor runs.")
    max_batch_delay_ms: float = Field(
        5.0, ge=0, description="Longest a request waits for its micro-batch to fill."
    )
