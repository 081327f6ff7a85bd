"""Config section of this stage (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from pairflow.config_fields import Section, ui


class RegisterConfig(Section):
    model_name: str = ui("pairflow-clip", "Registered model", "MLflow registered model name.")
