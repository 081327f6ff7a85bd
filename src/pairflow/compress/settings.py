"""Config section of this stage (assembled into ``pairflow.config.PairflowConfig``)."""

from __future__ import annotations

from pairflow.config_fields import Section, ui


class CompressConfig(Section):
    int8: bool = ui(True, "int8 quantization", "Build int8 ONNX Runtime variants.")
    distill: bool = ui(False, "Distillation", "Train a smaller student model.")
