"""Config section of this stage (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from typing import Literal

from pairflow.config_fields import Section, ui


class DeployConfig(Section):
    backend: Literal["local", "kserve"] = ui("local", "Deploy backend", "local or kserve.")
    enabled: bool = ui(True, "Deploy", "Run the canary deploy after registration.")
