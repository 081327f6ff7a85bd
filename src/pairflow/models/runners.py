"""Embedding runners for one CLIP: torch (:class:`TorchClip`) or ONNX Runtime
(:class:`OrtClip`), both returning L2-normalised float32 arrays."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from pairflow.models.errors import VariantError
from pairflow.models.towers import ImageTower, TextTower

if TYPE_CHECKING:
    from transformers import CLIPModel


class ClipRunner(Protocol):
    """Embeds preprocessed inputs; returns L2-normalised float32 arrays (n, d)."""

    def embed_images(self, pixel_values: np.ndarray) -> np.ndarray: ...

    def embed_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray: ...


def _normalise(x: torch.Tensor) -> np.ndarray:
    out: np.ndarray = F.normalize(x.float(), dim=-1).numpy()
    return out


class TorchClip:
    """A torch ``CLIPModel`` on the CPU (fp32, eager, inference mode)."""

    def __init__(self, model: CLIPModel) -> None:
        model.train(False)
        self.model = model
        self.image = ImageTower(self.model)
        self.text = TextTower(self.model)

    def embed_images(self, pixel_values: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return _normalise(self.image(torch.from_numpy(np.asarray(pixel_values, np.float32))))

    def embed_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return _normalise(
                self.text(
                    torch.from_numpy(np.asarray(input_ids, np.int64)),
                    torch.from_numpy(np.asarray(attention_mask, np.int64)),
                )
            )


def ort_session(path: Path, threads: int | None = None) -> Any:
    """A CPU ONNX Runtime session; ``threads`` sets intra-op threads (inter-op 1)."""
    # lazy: onnxruntime (slow to import); only this path needs it
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    # no busy-waiting worker threads after a run: they would steal the CPUs from whatever
    # runs next (another variant being timed, the serving process's other work)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own exception types for bad files
        raise VariantError(f"{path}: cannot load ONNX model ({exc})") from exc


class OrtClip:
    """The two ONNX towers in ONNX Runtime sessions."""

    def __init__(self, vision: Path, text: Path, threads: int | None = None) -> None:
        self.vision = ort_session(vision, threads)
        self.text = ort_session(text, threads)

    def embed_images(self, pixel_values: np.ndarray) -> np.ndarray:
        feeds = {"pixel_values": np.asarray(pixel_values, np.float32)}
        (out,) = self.vision.run(["image_embeds"], feeds)
        return _normalise(torch.from_numpy(np.asarray(out)))

    def embed_texts(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        feeds = {
            "input_ids": np.asarray(input_ids, np.int64),
            "attention_mask": np.asarray(attention_mask, np.int64),
        }
        (out,) = self.text.run(["text_embeds"], feeds)
        return _normalise(torch.from_numpy(np.asarray(out)))
