"""Export CLIP towers to ONNX (torch.export-based exporter) and check parity with torch.

``torch.onnx.export`` in torch 2.x defaults to the dynamo exporter (``dynamo=True``); dynamic
axes are given as ``dynamic_shapes`` with ``torch.export.Dim``: batch for the vision tower,
batch and sequence for the text tower. Weights are stored inside the ``.onnx`` file
(``external_data=False``: the towers are far below the 2 GB protobuf limit and one file per
tower keeps quantization and copying simple).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from pairflow.models.errors import CompressError, ParityError
from pairflow.models.formats import TEXT_FILE, VISION_FILE
from pairflow.models.towers import ImageTower, TextTower

if TYPE_CHECKING:
    from transformers import CLIPModel

    from pairflow.models.runners import ClipRunner

log = logging.getLogger("pairflow.models.export")

OPSET = 18


@dataclass(frozen=True)
class TowerFiles:
    """Paths of the two exported towers."""

    vision: Path
    text: Path


@dataclass(frozen=True)
class ParityResult:
    """Worst per-row cosine of ONNX vs torch embeddings for each tower, over ``rows`` rows."""

    vision_min_cosine: float
    text_min_cosine: float
    rows: int

    def to_dict(self) -> dict[str, float | int]:
        return {
            "vision_min_cosine": round(self.vision_min_cosine, 6),
            "text_min_cosine": round(self.text_min_cosine, 6),
            "rows": self.rows,
        }


def export_module(
    module: torch.nn.Module,
    args: tuple[torch.Tensor, ...],
    names: list[str],
    outputs: list[str],
    dynamic: dict[str, dict[int, torch.export.Dim]],
    path: Path,
) -> None:
    """Export ``module(*args)`` to ``path`` with named inputs/outputs and dynamic axes."""
    quiet = io.StringIO()  # the exporter prints progress lines to stdout
    try:
        with contextlib.redirect_stdout(quiet), torch.no_grad():
            torch.onnx.export(
                module.eval(),
                args,
                str(path),
                input_names=names,
                output_names=list(outputs),
                dynamic_shapes=dynamic,
                opset_version=OPSET,
                external_data=False,
                dynamo=True,
            )
    except Exception as exc:  # the exporter raises many types; all mean "cannot export"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CompressError(f"{path.name}: ONNX export failed ({first})") from exc


def export_towers(
    model: CLIPModel,
    out_dir: str | Path,
    pixel_values: torch.Tensor,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
) -> TowerFiles:
    """Write ``vision.onnx`` and ``text.onnx`` into ``out_dir`` from example inputs.

    The example batch only fixes dtypes and ranks: batch and sequence length are dynamic.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("sequence", min=1, max=4096)
    # a batch of 1 (or a sequence of 1) would be specialised as a constant by torch.export
    pixels = pixel_values[:1].repeat(2, 1, 1, 1) if len(pixel_values) < 2 else pixel_values
    ids, mask = input_ids.to(torch.int64), attention_mask.to(torch.int64)
    if len(ids) < 2:
        ids, mask = ids[:1].repeat(2, 1), mask[:1].repeat(2, 1)
    files = TowerFiles(out / VISION_FILE, out / TEXT_FILE)
    export_module(
        ImageTower(model),
        (pixels.float(),),
        ["pixel_values"],
        ["image_embeds"],
        {"pixel_values": {0: batch}},
        files.vision,
    )
    export_module(
        TextTower(model),
        (ids, mask),
        ["input_ids", "attention_mask"],
        ["text_embeds"],
        {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}},
        files.text,
    )
    log.info("exported %s and %s", files.vision, files.text)
    return files


def _row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-row cosine of two (n, d) arrays of already-normalised rows."""
    return np.asarray(np.sum(a * b, axis=1), dtype=np.float64)


def check_parity(
    reference: ClipRunner,
    candidate: ClipRunner,
    batches: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray]],
    min_cosine: float,
    what: str,
) -> ParityResult:
    """Compare ``candidate`` with ``reference`` on (pixels, ids, mask) batches.

    Raises :class:`ParityError` naming the tower, the worst cosine and the row when any
    embedding's cosine is below ``min_cosine``.
    """
    worst = {"vision": 1.0, "text": 1.0}
    worst_row = {"vision": -1, "text": -1}
    rows = 0
    for pixels, ids, mask in batches:
        pairs = {
            "vision": (reference.embed_images(pixels), candidate.embed_images(pixels)),
            "text": (reference.embed_texts(ids, mask), candidate.embed_texts(ids, mask)),
        }
        for tower, (ref, got) in pairs.items():
            cos = _row_cosines(ref, got)
            cos = np.where(np.isfinite(cos), cos, -1.0)
            i = int(np.argmin(cos))
            if cos[i] < worst[tower]:
                worst[tower], worst_row[tower] = float(cos[i]), rows + i
        rows += len(pixels)
    if rows == 0:
        raise ParityError(f"{what}: no held-out rows to check ONNX parity on")
    for tower in ("vision", "text"):
        if worst[tower] < min_cosine:
            raise ParityError(
                f"{what}: ONNX {tower} tower fails parity with torch: cosine "
                f"{worst[tower]:.6f} < {min_cosine} on held-out row {worst_row[tower]} "
                f"(of {rows}); the export is not faithful"
            )
    return ParityResult(worst["vision"], worst["text"], rows)
