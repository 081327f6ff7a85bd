"""The torch CLIP reader of :func:`pairflow.models.open.open_model`: ``CLIPModel`` +
``CLIPProcessor`` from a Hugging Face directory or hub id, safetensors only, never from a hub
offline. References are resolved by :func:`pairflow.models.locate.locate_model` (local
directories, hub ids, ``s3://`` prefixes, ``models:/`` URIs; see there).

Every failure (unknown reference, missing or corrupt files, a non-CLIP model, weights that do
not match the config) is a :class:`ModelLoadError` naming the reference, raised before any
data is read. Also here: :func:`save_clip` (the directory layout the reader takes) and
:func:`features` (projected embeddings from ``get_*_features``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError

from pairflow.config import S3Config
from pairflow.models.errors import ModelLoadError as ModelLoadError  # re-exported
from pairflow.models.formats import INFO_FILE
from pairflow.models.locate import TORCH, first_line, locate_model
from pairflow.models.locate import dir_digest as dir_digest  # re-exported
from pairflow.models.locate import find_hf_dir as find_hf_dir  # re-exported

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor

log = logging.getLogger("pairflow.models.clip")

_TRUTHY = frozenset({"1", "true", "yes", "on"})
# Errors transformers/safetensors/tokenizers raise on missing or malformed files.
_LOAD_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    KeyError,
    TypeError,
    AttributeError,
    RuntimeError,
    SafetensorError,
)


@dataclass(frozen=True)
class LoadedClip:
    """A CLIP model in eval mode, its processor, the reference it came from and a digest.

    ``digest`` is a sha256 of the loaded files (or of the hub id and commit), recorded in
    reports and embedding artifacts so later steps know which model produced them.
    """

    model: CLIPModel
    processor: CLIPProcessor
    ref: str
    digest: str
    path: Path | None
    device: torch.device

    @property
    def embed_dim(self) -> int:
        """Size of the projected (joint) embedding."""
        return int(self.model.text_projection.out_features)

    @property
    def max_text_length(self) -> int:
        """Tokens the text tower takes (captions are truncated to this)."""
        return int(self.model.text_model.embeddings.position_embedding.num_embeddings)


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set in the environment."""
    return any(
        os.environ.get(name, "").strip().lower() in _TRUTHY
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _check_config(directory: Path, ref: str) -> None:
    path = directory / "config.json"
    if not path.is_file():
        raise ModelLoadError(f"{ref}: no config.json (not a save_pretrained model directory)")
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"{ref}: unreadable config.json ({exc})") from exc
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type != "clip":
        raise ModelLoadError(f"{ref}: config.json is for model_type {model_type!r}, not 'clip'")


def _check_processor(processor: CLIPProcessor, model: CLIPModel, ref: str) -> None:
    """Refuse a processor that cannot feed ``model`` (e.g. tokenizer files missing)."""
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(f"{ref}: processor lacks a tokenizer or an image processor")
    vocab = int(model.text_model.embeddings.token_embedding.num_embeddings)
    size = len(tokenizer)
    # transformers builds a 2-3 token placeholder when tokenizer files are missing
    if not vocab // 2 < size <= vocab:
        raise ModelLoadError(
            f"{ref}: tokenizer has {size} tokens but the model's text vocabulary has {vocab} "
            "(tokenizer files missing or from another model)"
        )


def load_clip(
    ref: str,
    s3: S3Config | None = None,
    cache_dir: Path | None = None,
    *,
    device: str | torch.device | None = None,
    tracking_uri: str | None = None,
) -> LoadedClip:
    """The torch CLIP of any reference (its Hugging Face directory): the models-internal
    shortcut for ``open_model(ref, variant="torch").clip``; code outside
    :mod:`pairflow.models` calls :func:`pairflow.models.open.open_model`.

    ``device`` defaults to CUDA when available.
    """
    loc = locate_model(ref, variant=TORCH, s3=s3, tracking_uri=tracking_uri, cache_dir=cache_dir)
    return read_clip(loc.path, ref, device=device)


def read_clip(
    resolved: Path | str, ref: str, *, device: str | torch.device | None = None
) -> LoadedClip:
    """``CLIPModel`` + ``CLIPProcessor`` (eval mode, on ``device``) from a located Hugging Face
    directory or hub id; errors name ``ref``.

    ``device`` None means CUDA when available. Only safetensors weights are loaded; a local
    path or ``HF_HUB_OFFLINE`` means ``local_files_only=True`` (nothing is downloaded).
    """
    # lazy: transformers (slow to import); only this path needs it
    from transformers import CLIPModel, CLIPProcessor  # heavy: only loading needs it

    local = isinstance(resolved, Path)
    if isinstance(resolved, Path):
        _check_config(resolved, ref)
    kwargs: dict[str, Any] = {"local_files_only": local or hub_offline()}
    try:
        loaded: Any = CLIPModel.from_pretrained(
            resolved, use_safetensors=True, output_loading_info=True, **kwargs
        )
        model, info = loaded
        processor = CLIPProcessor.from_pretrained(resolved, **kwargs)
    except _LOAD_ERRORS as exc:
        where = "model directory" if local else "Hugging Face model (not a local directory)"
        hint = "; HF_HUB_OFFLINE is set, only the local cache is used" if hub_offline() else ""
        raise ModelLoadError(f"{ref}: cannot load CLIP {where} ({first_line(exc)}{hint})") from exc
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    bad = missing + list(info.get("mismatched_keys", []))
    if bad:
        raise ModelLoadError(
            f"{ref}: weights do not match the CLIP config ({len(bad)} missing or mismatched "
            f"tensors, e.g. {bad[0]})"
        )
    _check_processor(processor, model, ref)
    dev = torch.device(device) if device is not None else _default_device()
    model = model.to(dev).eval()
    if isinstance(resolved, Path):
        digest = dir_digest(resolved)
    else:
        commit = getattr(model.config, "_commit_hash", None) or ""
        digest = hashlib.sha256(f"hf:{resolved}@{commit}".encode()).hexdigest()
    return LoadedClip(
        model=model,
        processor=processor,
        ref=ref,
        digest=digest,
        path=resolved if isinstance(resolved, Path) else None,
        device=dev,
    )


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class BpeFiles:
    """A CLIP-layout BPE: ``vocab.json`` content and ordered merges."""

    vocab: dict[str, int]
    merges: list[tuple[str, str]]

    def write(self, directory: Path) -> tuple[Path, Path]:
        """Write ``vocab.json`` and ``merges.txt`` (OpenAI's format) into ``directory``."""
        vocab = directory / "vocab.json"
        merges = directory / "merges.txt"
        vocab.write_text(json.dumps(self.vocab, ensure_ascii=False) + "\n", encoding="utf-8")
        lines = ["#version: 0.2", *(f"{a} {b}" for a, b in self.merges)]
        merges.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return vocab, merges


def merge_pairs(raw: Sequence[Any]) -> list[tuple[str, str]]:
    """Merges from a tokenizer.json model (``"a b"`` strings or ``["a", "b"]`` pairs)."""
    pairs: list[tuple[str, str]] = []
    for m in raw:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        pairs.append((str(a), str(b)))
    return pairs


def save_clip(
    out_dir: str | Path,
    model: CLIPModel,
    processor: CLIPProcessor,
    info: dict[str, Any] | None = None,
) -> Path:
    """``save_pretrained`` model and processor (+ vocab.json/merges.txt) into ``out_dir``.

    Written to a sibling staging folder first, then moved into place.
    """
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        processor.image_processor.save_pretrained(staging)  # preprocessor_config.json
        tokenizer = processor.tokenizer
        vocab = tokenizer.get_vocab()
        merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
        BpeFiles(vocab, merge_pairs(merges)).write(staging)
        if info is not None:
            (staging / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        if out.exists():
            shutil.rmtree(out)
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def features(out: Any) -> torch.Tensor:
    """Projected embeddings from ``get_*_features`` (a tensor, or an output's pooler_output)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled: torch.Tensor = out.pooler_output
    return pooled
