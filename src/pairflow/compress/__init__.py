"""Compression: ONNX export with parity checks, int8 ONNX Runtime quantization, distillation,
and the measured variant table that picks what ships.

Keep this file free of heavy imports: ``pairflow.config`` imports ``compress.settings``.
"""
