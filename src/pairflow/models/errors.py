"""Errors of opening and compressing models: each names the model, file or setting at fault."""

from __future__ import annotations

from pairflow.errors import PairflowError


class ModelLoadError(PairflowError):
    """A model reference that cannot be resolved or loaded (one line naming the reference)."""


class CompressError(PairflowError):
    """A model that cannot be compressed as configured."""


class ParityError(CompressError):
    """An exported ONNX tower whose outputs differ from torch's beyond tolerance."""


class CalibrationError(CompressError):
    """No (or unusable) calibration images for static quantization."""


class StudentConfigError(CompressError):
    """A student shape that is not smaller than the teacher, or inconsistent."""


class VariantError(CompressError):
    """A compressed-model directory or variant that cannot be read."""


class LatencyBudgetError(CompressError):
    """No variant within the quality drop is as fast as the champion allows: nothing ships."""
