"""Building blocks of config sections; stage packages define their section with these.

A stage's section lives next to its code (``pairflow/<stage>/settings.py``) and is assembled
into :class:`pairflow.config.PairflowConfig`. This module imports nothing from pairflow, so a
settings module never pulls heavy dependencies into config loading.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

UI_FLAG = "kfp_parameter"


def ui(default: Any, title: str, description: str, **kwargs: Any) -> Any:
    """A config field that is also a pipeline parameter in the Kubeflow UI."""
    return Field(
        default, title=title, description=description, json_schema_extra={UI_FLAG: True}, **kwargs
    )


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)
