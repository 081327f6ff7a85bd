"""Load a CLIP model and its processor by reference, safetensors only, never from a hub offline.

References:

- a local directory written by ``save_pretrained`` (model + ``CLIPProcessor``);
- a Hugging Face id (``openai/clip-vit-base-patch32``): read from the local HF cache only
  when ``HF_HUB_OFFLINE`` is set;
- an ``s3://bucket/prefix``: every object under the prefix is downloaded once into a cache
  keyed by the listing's content hash (keys, ETags, sizes):
  ``$PAIRFLOW_CACHE/models/<hash>`` (default ``~/.cache/pairflow/models``);
- ``models:/NAME@ALIAS`` or ``models:/NAME/VERSION`` (also ``runs:/...``): the MLflow model
  version's artifacts are downloaded with ``mlflow.artifacts.download_artifacts``.

Layout expected under an S3 prefix or an MLflow model version's artifacts: a Hugging Face
``save_pretrained`` directory, either at the root or in a sub-folder (e.g. ``hf/``); the
shallowest folder holding ``config.json`` and ``*.safetensors`` is used, and the processor
files (``preprocessor_config.json``, ``tokenizer.json``/``vocab.json``...) must sit beside
them, as ``model.save_pretrained(d); processor.save_pretrained(d)`` writes them.

Every failure (unknown reference, missing or corrupt files, a non-CLIP model, weights that do
not match the config) is a :class:`ModelLoadError` naming the reference, raised before any
data is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import SafetensorError

from pairflow.config import S3Config
from pairflow.data import s3 as s3io
from pairflow.errors import InputDataError, PairflowError
from pairflow.models.formats import INFO_FILE

if TYPE_CHECKING:
    from transformers import CLIPModel, CLIPProcessor

log = logging.getLogger("pairflow.models.clip")

MLFLOW_SCHEMES: tuple[str, ...] = ("models:/", "runs:/")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_TRUTHY = frozenset({"1", "true", "yes", "on"})
_SEARCH_DEPTH = 3
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


class ModelLoadError(PairflowError):
    """A model reference that cannot be resolved or loaded as a CLIP model."""


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


def model_cache_dir() -> Path:
    """``$PAIRFLOW_CACHE/models``, else ``~/.cache/pairflow/models``."""
    root = os.environ.get("PAIRFLOW_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "pairflow"
    return base / "models"


def dir_digest(path: Path) -> str:
    """sha256 over relative names and contents of the files under ``path`` (dotfiles skipped).

    The same model directory has the same digest wherever it was loaded from.
    """
    h = hashlib.sha256()
    files = (p for p in path.rglob("*") if p.is_file())
    for f in sorted(p for p in files if not p.relative_to(path).as_posix().startswith(".")):
        h.update(f.relative_to(path).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def find_hf_dir(root: Path, ref: str) -> Path:
    """The shallowest folder under ``root`` with ``config.json`` and safetensors weights."""

    def is_hf(d: Path) -> bool:
        return (d / "config.json").is_file() and any(d.glob("*.safetensors"))

    level = [root]
    for _ in range(_SEARCH_DEPTH + 1):
        for d in level:
            if is_hf(d):
                return d
        level = sorted(c for d in level for c in d.iterdir() if c.is_dir())
    if (root / "config.json").is_file():
        raise ModelLoadError(
            f"{ref}: model directory has config.json but no *.safetensors weights "
            "(pickle checkpoints are not loaded)"
        )
    raise ModelLoadError(
        f"{ref}: no Hugging Face model directory (config.json + *.safetensors) found"
    )


def _s3_model_dir(ref: str, s3: S3Config | None, cache: Path) -> Path:
    """Download the objects under ``ref`` once; the cache folder is named by their hash."""
    try:
        bucket, prefix = s3io.parse_s3_uri(ref)
        keys = s3io.list_keys(ref, s3)
        if not keys:
            raise ModelLoadError(f"{ref}: no objects under this S3 prefix")
        base = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        listing = []
        for key in keys:
            etag, size = s3io.head_object(s3io.s3_uri(bucket, key), s3)
            listing.append((key[len(base) :], etag, size))
    except ModelLoadError:
        raise
    except InputDataError as exc:
        raise ModelLoadError(f"{ref}: cannot list model files ({exc})") from exc
    h = hashlib.sha256()
    for rel, etag, size in listing:
        h.update(f"{rel}\t{etag}\t{size}\n".encode())
    dest = cache / h.hexdigest()[:32]
    if (dest / ".complete").is_file():
        return dest
    cache.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
    try:
        for rel, _, _ in listing:
            try:
                s3io.download_file(s3io.s3_uri(bucket, base + rel), staging / rel, s3)
            except InputDataError as exc:
                raise ModelLoadError(f"{ref}: cannot download {rel} ({exc})") from exc
        (staging / ".complete").write_text(h.hexdigest() + "\n")
        if dest.exists():
            shutil.rmtree(dest)  # an incomplete earlier download
        try:
            os.replace(staging, dest)
        except OSError:
            if not (dest / ".complete").is_file():  # a concurrent download won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


_MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")


def _mlflow_model_dir(ref: str, cache: Path, tracking_uri: str | None) -> Path:
    """Download an MLflow model version's (or run's) artifacts; the cached HF directory.

    The download is kept under ``cache/<content hash>`` (one copy per distinct model).
    """
    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    cache.mkdir(parents=True, exist_ok=True)
    dest = Path(tempfile.mkdtemp(prefix=".download-", dir=cache))
    origin = ref
    try:
        uri = ref
        match = _MODEL_URI.match(ref)
        if match is not None:
            client = MlflowClient(tracking_uri=tracking_uri)
            name = match["name"]
            version = (
                client.get_model_version_by_alias(name, match["alias"])
                if match["alias"]
                else client.get_model_version(name, match["version"])
            )
            origin = f"models:/{name}/{version.version}"
            uri = client.get_model_version_download_uri(name, version.version)
        mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=str(dest), tracking_uri=tracking_uri
        )
    except (MlflowException, OSError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise ModelLoadError(f"{ref}: cannot download from MLflow ({_first_line(exc)})") from exc
    log.info("%s: downloaded %s from MLflow", ref, origin)
    try:
        hf = find_hf_dir(dest, ref)
    except ModelLoadError:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    final = cache / dir_digest(hf)[:32]
    if final.exists():
        shutil.rmtree(dest, ignore_errors=True)
    else:
        try:
            os.replace(dest, final)
        except OSError:
            shutil.rmtree(dest, ignore_errors=True)
            if not final.exists():
                raise
    return final / hf.relative_to(dest)


def resolve_reference(
    ref: str,
    s3: S3Config | None = None,
    cache_dir: Path | None = None,
    tracking_uri: str | None = None,
) -> Path | str:
    """A local directory for ``ref`` (downloading S3/MLflow models), or a hub id as given."""
    ref = ref.strip()
    cache = cache_dir or model_cache_dir()
    if not ref:
        raise ModelLoadError(
            "clip_filter.model: empty model reference (give a directory, HF id, s3:// prefix "
            "or models:/NAME@ALIAS)"
        )
    if ref.startswith(MLFLOW_SCHEMES):
        return _mlflow_model_dir(ref, cache / "mlflow", tracking_uri)
    if s3io.is_s3_uri(ref):
        return find_hf_dir(_s3_model_dir(ref, s3, cache / "s3"), ref)
    if "://" in ref:
        raise ModelLoadError(
            f"{ref}: unsupported model reference scheme (use a directory, a Hugging Face id, "
            "s3:// or models:/)"
        )
    path = Path(ref).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{ref}: is a file, expected a model directory")
    if ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or "\\" in ref:
        raise ModelLoadError(f"{ref}: model directory not found")
    if not _HUB_ID.match(ref):
        raise ModelLoadError(
            f"{ref}: unknown model reference (not a directory, Hugging Face id, s3:// prefix "
            "or models:/ URI)"
        )
    return ref


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def load_clip(
    ref: str,
    s3: S3Config | None = None,
    cache_dir: Path | None = None,
    *,
    device: str | torch.device | None = None,
    tracking_uri: str | None = None,
) -> LoadedClip:
    """Resolve ``ref`` and load ``CLIPModel`` + ``CLIPProcessor`` (eval mode, on ``device``).

    ``device`` defaults to CUDA when available. Only safetensors weights are loaded; a local
    path or ``HF_HUB_OFFLINE`` means ``local_files_only=True`` (nothing is downloaded).
    """
    from transformers import CLIPModel, CLIPProcessor

    resolved = resolve_reference(ref, s3, cache_dir, tracking_uri)
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
        raise ModelLoadError(f"{ref}: cannot load CLIP {where} ({_first_line(exc)}{hint})") from exc
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
