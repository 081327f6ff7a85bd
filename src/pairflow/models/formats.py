"""File layouts of the model artifacts pairflow writes and reads: names only, no torch.

- a compressed model (``variants.json`` index, one folder per variant, ``variants.md``);
- an ONNX variant (``vision.onnx``, ``text.onnx``; a classifier adds ``head.onnx`` and
  ``classifier.json``);
- a trained artifact (an HF CLIP folder plus ``pairflow_model.json`` and, for a classifier,
  ``fusion_head.safetensors``);
- the demo's reference CLIP (``pairflow_reference.json`` beside the HF files).
"""

from __future__ import annotations

VARIANTS_FORMAT = "pairflow-compressed/1"
INDEX_FILE = "variants.json"
TABLE_FILE = "variants.md"
VISION_FILE = "vision.onnx"
TEXT_FILE = "text.onnx"
HEAD_ONNX_FILE = "head.onnx"
SPEC_FILE = "classifier.json"
META_FILE = "pairflow_model.json"
FUSION_HEAD_FILE = "fusion_head.safetensors"
INFO_FILE = "pairflow_reference.json"
