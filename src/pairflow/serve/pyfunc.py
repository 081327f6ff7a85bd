"""The pyfunc served from the registry: embeddings, pair scores or labels for a DataFrame.

Logged as *models from code* (:mod:`pairflow.serve.pyfunc_entry`): the model version
holds this code's entry file, the Hugging Face directory (safetensors), the chosen ONNX
variant when that is what ships, and ``labels.json``; never a pickle.

Input columns: ``image`` (a path, ``file://`` URI, ``data:`` URI, base64 text, or raw
bytes: the same forms ``pairflow serve`` takes, told apart the same way, see
:func:`pairflow.serve.limits.image_payload`) and ``caption``; either may be missing for
embeddings. The mode comes from the ``mode`` param or a ``mode`` column: ``embeddings``,
``scores`` (default) or ``labels``. A classifier artifact from ``pairflow.stages.train``
(``pairflow_model.json`` kind ``classifier``) answers ``labels`` with its fusion head (image
and caption needed): ``label``, ``label_score`` and ``probabilities`` (softmax over the
classes, in ``labels.json`` order); a CLIP answers zero-shot over the label set in
``labels.json`` (``label``, ``label_score`` = cosine similarity).
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pandas as pd
from mlflow.pyfunc.model import PythonModel
from PIL import Image

from pairflow.serve.limits import RequestError, image_payload

MODES = ("embeddings", "scores", "labels")
DEFAULT_MODE = "scores"
LABEL_PROMPT = "a {label}"
HF_ARTIFACT = "hf"
LABELS_ARTIFACT = "labels"
VARIANT_ARTIFACT = "variant"


ZERO_SHOT_SCALE = 100.0  # CLIP's logit scale ceiling, used for zero-shot class probabilities


def decode_image(value: Any) -> Any:
    """A PIL RGB image from a path, ``file://`` or ``data:`` URI, base64 text, or bytes
    (raw image bytes, or base64 text as bytes)."""

    if isinstance(value, bytes | bytearray):
        try:
            return Image.open(io.BytesIO(image_payload(bytes(value), "image"))).convert("RGB")
        except RequestError as exc:
            raise ValueError(str(exc)) from exc
    if not isinstance(value, str) or not value:
        raise ValueError(
            f"image: expected a path, data: URI, base64 text or bytes, got {type(value).__name__}"
        )
    path = Path(value.removeprefix("file://"))
    if not value.startswith("data:") and (value.startswith("file://") or _is_file(path)):
        if not _is_file(path):
            raise ValueError(f"image: {value!r} is not a readable file")
        return Image.open(path).convert("RGB")
    try:
        data = image_payload(value, "image")
    except RequestError as exc:
        raise ValueError(f"image: {value[:60]!r} is neither a readable file nor {exc}") from exc
    return Image.open(io.BytesIO(data)).convert("RGB")


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False for strings no file system takes (base64 is often longer
    than a file name may be)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and value != value)


class PairClipModel(PythonModel):
    """CLIP image/text embeddings, image-caption cosine scores, zero-shot labels."""

    def load_context(self, context: Any) -> None:
        config = dict(getattr(context, "model_config", None) or {})
        self.kind = str(config.get("kind", "torch"))
        labels_path = context.artifacts.get(LABELS_ARTIFACT)
        self.labels: list[str] = (
            list(json.loads(Path(labels_path).read_text())) if labels_path else []
        )
        self.trained: Any = None
        # torch, transformers, onnxruntime: imported when a model is loaded, not with the module
        # lazy: boto3, botocore, torch (slow to import); only this path needs it
        from pairflow.models.open import open_model

        if self.kind == "onnx":
            variant = open_model(context.artifacts[VARIANT_ARTIFACT]).loaded_variant
            assert variant is not None  # an ONNX variant folder opens as a compress variant
            self.variant = variant
            self.head_labels: list[str] | None = self.variant.labels
            if self.head_labels:  # an exported classifier: its head's classes
                self.labels = list(self.head_labels)
            return
        self.head_labels = None
        opened = open_model(Path(context.artifacts[HF_ARTIFACT]), variant="torch")
        self.clip = opened.clip
        if opened.trained is not None:
            self.trained = opened.trained
            if self.trained.kind == "classifier" and self.trained.labels:
                self.labels = list(self.trained.labels)

    def _embed_images(self, images: list[Any]) -> Any:
        # lazy: boto3, botocore, torch (slow to import); only this path needs it
        import torch
        import torch.nn.functional as F

        if self.kind == "onnx":
            pixels = self.variant.preprocess_images(images)
            return torch.from_numpy(self.variant.embed_images(pixels))
        from pairflow.models.clip import features

        pixels = self.clip.processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.inference_mode():
            out = features(self.clip.model.get_image_features(pixel_values=pixels))
        return F.normalize(out.float(), dim=-1)

    def _tokenize(self, texts: list[str]) -> Any:
        """The torch model's tokenizer output (padded, truncated to its text length)."""
        return self.clip.processor.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.clip.max_text_length,
            return_tensors="pt",
        )

    def _embed_texts(self, texts: list[str]) -> Any:
        # lazy: boto3, botocore, torch (slow to import); only this path needs it
        import torch
        import torch.nn.functional as F

        if self.kind == "onnx":
            ids, mask = self.variant.tokenize(texts)
            return torch.from_numpy(self.variant.embed_texts(ids, mask))
        from pairflow.models.clip import features

        tok = self._tokenize(texts)
        with torch.inference_mode():
            out = features(
                self.clip.model.get_text_features(
                    input_ids=tok["input_ids"], attention_mask=tok["attention_mask"]
                )
            )
        return F.normalize(out.float(), dim=-1)

    # No type hints: MLflow derives input handling from predict's hints (the signature does it)
    def predict(self, context, model_input, params=None):  # type: ignore[no-untyped-def]
        return self.run(pd.DataFrame(model_input), params)

    def run(self, frame: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Answer ``frame`` in the requested mode (what ``predict`` does)."""
        mode = str((params or {}).get("mode") or "")
        if not mode and "mode" in frame.columns and len(frame):
            mode = str(frame["mode"].iloc[0])
        mode = mode or DEFAULT_MODE
        if mode not in MODES:
            raise ValueError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
        images = list(frame["image"]) if "image" in frame.columns else [None] * len(frame)
        captions = list(frame["caption"]) if "caption" in frame.columns else [None] * len(frame)
        if mode == "embeddings":
            return self._embeddings(images, captions)
        if mode == "scores":
            return self._scores(images, captions)
        if self.head_labels or (self.trained is not None and self.trained.kind == "classifier"):
            return self._classify(images, captions)
        return self._labels(images)

    def _classify(self, images: list[Any], captions: list[Any]) -> pd.DataFrame:
        """Labels from the trained fusion classifier (it reads image and caption)."""
        # lazy: torch (slow to import); only this path needs it
        import torch

        for i, (img, cap) in enumerate(zip(images, captions, strict=True)):
            if not (_present(img) and _present(cap)):
                raise ValueError(f"row {i}: the classifier needs both image and caption")
        if not images:
            return pd.DataFrame({"label": [], "label_score": [], "probabilities": []})
        decoded = [decode_image(v) for v in images]
        texts = [str(c) for c in captions]
        if self.kind == "onnx":  # the exported classifier (ONNX towers + head)
            ids, mask = self.variant.tokenize(texts)
            logits = self.variant.classify(self.variant.preprocess_images(decoded), ids, mask)
            probs = torch.from_numpy(logits).float().softmax(dim=-1)
        else:
            pixels = self.clip.processor(images=decoded, return_tensors="pt")["pixel_values"]
            tok = self._tokenize(texts)
            with torch.inference_mode():
                probs = self.trained.classify(
                    pixels, tok["input_ids"], tok["attention_mask"]
                ).softmax(dim=-1)
        best = probs.argmax(dim=-1).tolist()
        return pd.DataFrame(
            {
                "label": [self.labels[j] for j in best],
                "label_score": [float(probs[i, j]) for i, j in enumerate(best)],
                "probabilities": [[float(p) for p in row] for row in probs.tolist()],
            }
        )

    def _embeddings(self, images: list[Any], captions: list[Any]) -> pd.DataFrame:
        img_rows = [i for i, v in enumerate(images) if _present(v)]
        txt_rows = [i for i, v in enumerate(captions) if _present(v)]
        img_col: list[Any] = [None] * len(images)
        txt_col: list[Any] = [None] * len(captions)
        if img_rows:
            emb = self._embed_images([decode_image(images[i]) for i in img_rows])
            for i, row in zip(img_rows, emb.tolist(), strict=True):
                img_col[i] = row
        if txt_rows:
            emb = self._embed_texts([str(captions[i]) for i in txt_rows])
            for i, row in zip(txt_rows, emb.tolist(), strict=True):
                txt_col[i] = row
        return pd.DataFrame({"image_embedding": img_col, "text_embedding": txt_col})

    def _scores(self, images: list[Any], captions: list[Any]) -> pd.DataFrame:
        for i, (img, cap) in enumerate(zip(images, captions, strict=True)):
            if not (_present(img) and _present(cap)):
                raise ValueError(f"row {i}: scores need both image and caption")
        if not images:
            return pd.DataFrame({"score": pd.Series([], dtype="float64")})
        img = self._embed_images([decode_image(v) for v in images])
        txt = self._embed_texts([str(c) for c in captions])
        return pd.DataFrame({"score": (img * txt).sum(dim=-1).tolist()})

    def _labels(self, images: list[Any]) -> pd.DataFrame:
        if not self.labels:
            raise ValueError("labels: this model version was registered without a label set")
        if not images:
            return pd.DataFrame({"label": [], "label_score": [], "probabilities": []})
        img = self._embed_images([decode_image(v) for v in images])
        txt = self._embed_texts([LABEL_PROMPT.format(label=label) for label in self.labels])
        sims = img @ txt.T
        best = sims.argmax(dim=-1).tolist()
        # zero-shot class probabilities as the server gives them: softmax of scaled cosines
        probs = (ZERO_SHOT_SCALE * sims).softmax(dim=-1)
        return pd.DataFrame(
            {
                "label": [self.labels[j] for j in best],
                "label_score": [float(sims[i, j]) for i, j in enumerate(best)],
                "probabilities": [[float(p) for p in row] for row in probs.tolist()],
            }
        )
