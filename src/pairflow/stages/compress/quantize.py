"""int8 with ONNX Runtime: dynamic (weights int8, activations quantized at run time) for both
towers, and static (QDQ, activation ranges calibrated on images) for the vision tower.

Calibration images come from rows the model was not trained on (the held-out split) by
default; only activation ranges are estimated from them (no labels or captions are used),
so recall measured on the same rows is not fitted to them.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from onnxruntime.quantization import (
    CalibrationDataReader,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import (
    quant_pre_process,
)

from pairflow.models.errors import CalibrationError

log = logging.getLogger("pairflow.stages.compress.quantize")


def _preprocess(src: Path, dst: Path) -> Path:
    """ORT's recommended pre-processing (ONNX shape inference + graph optimisation).

    Symbolic shape inference is skipped: it gives up on the text tower's dynamic sequence
    axis ("Incomplete symbolic shape inference"), and ONNX shape inference suffices here.
    """
    quant_pre_process(str(src), str(dst), skip_symbolic_shape=True)
    return dst


def quantize_dynamic_file(
    src: Path, dst: Path, op_types: Sequence[str], per_channel: bool = False
) -> Path:
    """``dst``: ``src`` with int8 weights for ``op_types`` (dynamic activation quantization)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pairflow-quant-") as tmp:
        pre = _preprocess(src, Path(tmp) / src.name)
        quantize_dynamic(
            str(pre),
            str(dst),
            op_types_to_quantize=list(op_types),
            per_channel=per_channel,
            weight_type=QuantType.QInt8,
        )
    return dst


class PixelBatches(CalibrationDataReader):  # type: ignore[misc]
    """Feeds ``pixel_values`` batches to ORT's calibrator."""

    def __init__(self, batches: Sequence[np.ndarray], input_name: str = "pixel_values") -> None:
        self.batches = [np.ascontiguousarray(b, dtype=np.float32) for b in batches if len(b)]
        self.input_name = input_name
        self._it: Iterator[np.ndarray] = iter(self.batches)

    def get_next(self) -> dict[str, Any] | None:
        batch = next(self._it, None)
        return None if batch is None else {self.input_name: batch}

    def rewind(self) -> None:
        self._it = iter(self.batches)


def quantize_static_vision(
    src: Path,
    dst: Path,
    calibration: Sequence[np.ndarray],
    op_types: Sequence[str],
    per_channel: bool = False,
    what: str = "vision tower",
) -> Path:
    """``dst``: the vision tower with static int8 (QDQ) weights and activations.

    ``calibration`` holds pixel batches; none (or only empty batches) raises
    :class:`CalibrationError`.
    """
    reader = PixelBatches(calibration)
    if not reader.batches:
        raise CalibrationError(
            f"{what}: the calibration set for static int8 quantization is empty (no readable "
            "images among the calibration rows; check compress.calibration_source and the "
            "held-out split)"
        )
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="pairflow-quant-") as tmp:
        pre = _preprocess(src, Path(tmp) / src.name)
        quantize_static(
            str(pre),
            str(dst),
            reader,
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=[*op_types, "Conv"],
            per_channel=per_channel,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibration_cache_path=Path(tmp) / "calib",
        )
        # the calibrator may leave an augmented model beside the output
        for extra in dst.parent.glob("augmented_model*.onnx"):
            extra.unlink()
    return dst
