"""The compressed-model index ``variants.json`` (format ``pairflow-compressed/1``; the layout
is described in :mod:`pairflow.models.variants`): read and written here, torch-free, so that
locating a model (:mod:`pairflow.models.locate`) loads nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from pairflow.models.errors import VariantError
from pairflow.models.formats import INDEX_FILE, VARIANTS_FORMAT

VariantKind = Literal["torch", "onnx"]


class VariantRecord(BaseModel):
    """One row of ``variants.json``."""

    model_config = ConfigDict(extra="forbid")

    name: str
    kind: VariantKind
    files: list[str]
    metrics: dict[str, Any] = Field(default_factory=dict)
    chosen: bool = False
    description: str = ""


class VariantIndex(BaseModel):
    """The whole ``variants.json``."""

    model_config = ConfigDict(extra="forbid")

    format: str = VARIANTS_FORMAT
    chosen: str
    source_digest: str = ""
    task: Literal["clip", "classifier"] = "clip"
    labels: list[str] | None = None
    selection: dict[str, Any] = Field(default_factory=dict)
    variants: list[VariantRecord]

    def get(self, name: str) -> VariantRecord:
        for v in self.variants:
            if v.name == name:
                return v
        known = ", ".join(v.name for v in self.variants)
        raise VariantError(f"no variant {name!r} in {INDEX_FILE} (have: {known})")

    def write(self, directory: str | Path) -> Path:
        out = Path(directory) / INDEX_FILE
        out.write_text(json.dumps(self.model_dump(mode="json"), indent=2, sort_keys=True) + "\n")
        return out

    @classmethod
    def read(cls, directory: str | Path) -> VariantIndex:
        path = Path(directory) / INDEX_FILE
        try:
            data = json.loads(path.read_text())
            index = cls.model_validate(data)
        except (OSError, ValueError) as exc:
            raise VariantError(f"{path}: not a readable variant index ({exc})") from exc
        if index.format != VARIANTS_FORMAT:
            raise VariantError(f"{path}: format {index.format!r}, expected {VARIANTS_FORMAT!r}")
        return index
