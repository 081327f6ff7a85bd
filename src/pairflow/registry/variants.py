"""Which model variant ships, read from the compress step's ``compressed`` directory.

Layout written by compress (``pairflow.models.variants``, format ``pairflow-compressed/1``):
``variants.json`` at the root with ``chosen`` and ``variants`` (``name``, ``kind`` torch|onnx,
``files``, ``metrics``, ``description``), one folder ``<root>/<name>/`` per variant (torch: a
``save_pretrained`` CLIP directory; onnx: ``vision.onnx``, ``text.onnx`` + processor files)
and ``variants.md`` (the table). Parsed here as plain JSON so the registry does not import
the compress code. Without an index (compress not run or not implemented) the trained model
directory is the single variant ``fp32_torch``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pairflow.models.formats import INDEX_FILE
from pairflow.registry.retry import RegistryError

Kind = Literal["torch", "onnx"]


@dataclass(frozen=True)
class Variant:
    name: str
    path: Path
    kind: Kind
    metrics: dict[str, Any] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class VariantSet:
    """The shipping variant, the others, and an HF directory for ``load_clip`` users."""

    chosen: Variant
    others: list[Variant]
    hf_dir: Path
    index: Path | None
    # compress's selection record (rule, reason, latency budget against the champion)
    selection: dict[str, Any] = field(default_factory=dict)

    def table(self) -> list[dict[str, Any]]:
        rows = []
        for v in [self.chosen, *self.others]:
            row: dict[str, Any] = {"variant": v.name, "kind": v.kind, "chosen": v is self.chosen}
            for key, val in v.metrics.items():
                if isinstance(val, int | float | str | bool):
                    row[key] = val
            for batch, lat in (v.metrics.get("latency_ms") or {}).items():
                if isinstance(lat, dict) and isinstance(lat.get("p50_ms"), int | float):
                    row[f"p50_ms_b{batch}"] = lat["p50_ms"]
            rows.append(row)
        return sorted(rows, key=lambda r: (not r["chosen"], str(r["variant"])))


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def resolve_variants(compressed: Path | None, trained: Path | None) -> VariantSet:
    """The variants to register; :class:`RegistryError` when nothing servable is found."""
    index = compressed / INDEX_FILE if compressed is not None else None
    if index is None or not index.is_file():
        for candidate in (compressed, trained):
            if candidate is not None and is_hf_dir(candidate):
                only = Variant("fp32_torch", candidate, "torch")
                return VariantSet(only, [], candidate, None)
        raise RegistryError(
            f"model: no {INDEX_FILE} and no Hugging Face model directory (config.json + "
            f"*.safetensors) in compressed={compressed} or trained={trained}"
        )
    assert compressed is not None
    try:
        data = json.loads(index.read_text())
        chosen_name = str(data["chosen"])
        rows = list(data["variants"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise RegistryError(f"{index}: not a readable variant index ({exc})") from exc
    variants = []
    for row in rows:
        if not isinstance(row, dict) or row.get("kind") not in ("torch", "onnx"):
            raise RegistryError(f"{index}: variant entry {row!r} lacks a torch|onnx kind")
        name = str(row["name"])
        variants.append(
            Variant(
                name,
                compressed / name,
                row["kind"],
                dict(row.get("metrics") or {}),
                str(row.get("description") or ""),
            )
        )
    chosen = next((v for v in variants if v.name == chosen_name), None)
    if chosen is None:
        raise RegistryError(f"{index}: chosen variant {chosen_name!r} is not listed")
    if not chosen.path.is_dir():
        raise RegistryError(f"{index}: chosen variant folder {chosen.path} is missing")
    if chosen.kind == "torch" and not is_hf_dir(chosen.path):
        raise RegistryError(f"{chosen.path}: torch variant is not a save_pretrained directory")
    hf = chosen.path if chosen.kind == "torch" else _fallback_hf(variants, trained)
    if hf is None:
        raise RegistryError(
            f"{index}: chosen variant {chosen_name!r} is ONNX and no torch variant or trained "
            "model directory is available for load_clip users"
        )
    others = [v for v in variants if v is not chosen and v.path.is_dir()]
    selection = data.get("selection") if isinstance(data.get("selection"), dict) else {}
    return VariantSet(chosen, others, hf, index, dict(selection))


def _fallback_hf(variants: list[Variant], trained: Path | None) -> Path | None:
    for v in variants:
        if v.kind == "torch" and is_hf_dir(v.path):
            return v.path
    return trained if trained is not None and is_hf_dir(trained) else None
