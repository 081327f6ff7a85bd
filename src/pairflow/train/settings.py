"""Config section of this stage (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from typing import Literal

from pairflow.config_fields import Section, ui


class TrainConfig(Section):
    model: Literal["clip", "classifier"] = ui("clip", "Model", "What to train.")
    epochs: int = ui(2, "Epochs", "Training epochs.", ge=1)
    batch_size: int = ui(32, "Batch size", "Per-rank batch size.", ge=1)
    learning_rate: float = ui(5e-4, "Learning rate", "Peak AdamW learning rate.", gt=0)
    world_size: int = ui(
        1, "Workers", "Training processes (torchrun nproc / TrainJob nodes).", ge=1
    )
