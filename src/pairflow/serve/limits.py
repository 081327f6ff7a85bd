"""Request parsing and limits: V1/V2 bodies → checked instances, or a 4xx with a message.

Protocols (both carry the same instance fields):

- V1 ``POST /v1/models/NAME:predict``: ``{"task": "score", "instances": [{"image": B64,
  "caption": "..."}, ...]}``; ``image`` may also be ``{"b64": B64}``; ``image_path`` instead
  of ``image`` names a file under ``serve.allowed_image_root``. ``task`` may also sit in
  ``parameters``.
- V2 ``POST /v2/models/NAME/infer`` (REST, JSON or the binary tensor extension) and gRPC
  ``ModelInfer``: BYTES inputs ``image``, ``image_path`` and/or ``caption``, each of shape
  ``[n]``; ``parameters.task``. An ``image`` element is raw image bytes (binary extension,
  gRPC) or base64 text (any transport): see :func:`image_payload`.

Tasks: ``score`` (image + caption → cosine similarity), ``embed`` (image and/or caption →
L2-normalised embeddings), ``classify`` (image → label and class probabilities).

Every violation raises :class:`RequestError` naming the instance and field; the predictor
turns it into HTTP 400.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast, get_args

from pairflow.data.decode import DecodeError, decode_image
from pairflow.errors import PairflowError

if TYPE_CHECKING:
    from PIL import Image

    from pairflow.serve.settings import ServeConfig

Task = Literal["score", "embed", "classify"]
TASKS: tuple[str, ...] = get_args(Task)
DEFAULT_TASK: Task = "score"


class RequestError(PairflowError):
    """A request that breaks the protocol or a limit (HTTP 400)."""


@dataclass(frozen=True)
class RawInstance:
    """One instance as sent: image (base64 text or raw bytes) or image path, and caption
    (any may be absent)."""

    image_b64: str | None = None
    image_path: str | None = None
    caption: str | None = None
    image_bytes: bytes | None = None

    @property
    def has_image(self) -> bool:
        return (
            self.image_b64 is not None
            or self.image_bytes is not None
            or self.image_path is not None
        )

    @property
    def image_size(self) -> int:
        """Characters/bytes of the image as sent (0 for paths)."""
        return len(self.image_b64 or "") + len(self.image_bytes or b"")


@dataclass(frozen=True)
class Pair:
    """One checked instance: a decoded RGB image and/or a caption.

    ``head``: run the model's classifier head on it (a classify request to a classifier).
    """

    image: Image.Image | None
    caption: str | None
    head: bool = False


@dataclass(frozen=True)
class ParsedRequest:
    task: Task
    instances: list[RawInstance]


def _task(value: object) -> Task:
    if value is None:
        return DEFAULT_TASK
    if not isinstance(value, str) or value not in TASKS:
        raise RequestError(f"task: {value!r} is not one of {', '.join(TASKS)}")
    return cast(Task, value)


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n"


def looks_base64(data: bytes) -> bool:
    """True when ``data`` is entirely base64 text. Image files never are: PNG, JPEG, GIF,
    WebP, BMP and TIFF headers all hold bytes outside the base64 alphabet."""
    return bool(data) and not data.translate(None, _B64_ALPHABET)


def image_payload(value: str | bytes, where: str) -> bytes:
    """Image file bytes from an image element: base64 text (str, or bytes that are all base64
    text; a ``data:...;base64,`` prefix is allowed) or raw image bytes."""
    if isinstance(value, bytes):
        if not (value.startswith(b"data:") or looks_base64(value.lstrip())):
            return value
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError as exc:
            raise RequestError(f"{where}: data: URI is not ASCII text") from exc
    else:
        text = value
    if text.startswith("data:"):
        head, sep, text = text.partition(",")
        if not sep or not head.endswith(";base64"):
            raise RequestError(f"{where}: data: URI without ';base64,'")
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(f"{where}: not valid base64 ({exc})") from exc


def _opt_str(value: object, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RequestError(f"{where}: not UTF-8 text") from exc
    if not isinstance(value, str):
        raise RequestError(f"{where}: expected a string, got {type(value).__name__}")
    return value


def parse_v1(body: object) -> ParsedRequest:
    """A V1 body (``{"instances": [...]}``; JSON bytes accepted) → task and raw instances."""
    if isinstance(body, (bytes, str)):
        try:
            body = json.loads(body)
        except ValueError as exc:
            raise RequestError(f"request body: not valid JSON ({exc})") from exc
    if not isinstance(body, Mapping):
        raise RequestError("request body: expected a JSON object with 'instances'")
    params = body.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise RequestError("parameters: expected a JSON object")
    task = _task(body.get("task", params.get("task")))
    instances = body.get("instances")
    if instances is None:
        raise RequestError("instances: missing (expected a list of {image, caption} objects)")
    if not isinstance(instances, list):
        raise RequestError(f"instances: expected a list, got {type(instances).__name__}")
    raws = []
    for i, inst in enumerate(instances):
        if not isinstance(inst, Mapping):
            raise RequestError(f"instances[{i}]: expected an object with image and/or caption")
        unknown = set(inst) - {"image", "image_path", "caption"}
        if unknown:
            raise RequestError(
                f"instances[{i}]: unknown field(s) {', '.join(sorted(map(str, unknown)))} "
                "(expected image, image_path, caption)"
            )
        image = inst.get("image")
        if isinstance(image, Mapping):
            image = image.get("b64")
        raws.append(
            RawInstance(
                image_b64=_opt_str(image, f"instances[{i}].image"),
                image_path=_opt_str(inst.get("image_path"), f"instances[{i}].image_path"),
                caption=_opt_str(inst.get("caption"), f"instances[{i}].caption"),
            )
        )
    return ParsedRequest(task, raws)


V2_INPUTS = ("image", "image_path", "caption")


def parse_v2(
    inputs: Sequence[tuple[str, str, list[int], Any]], parameters: object
) -> ParsedRequest:
    """V2 inputs as (name, datatype, shape, data) → task and raw instances.

    ``image`` elements stay as sent: ``str`` (base64 text) or ``bytes`` (raw image bytes, or
    base64 text sent as bytes; told apart when decoding).
    """
    if parameters is not None and not isinstance(parameters, Mapping):
        raise RequestError("parameters: expected an object")
    params = parameters or {}
    task = _task(params.get("task"))
    columns: dict[str, list[Any]] = {}
    for name, datatype, shape, data in inputs:
        if name not in V2_INPUTS:
            raise RequestError(f"inputs: unknown input {name!r} (expected {', '.join(V2_INPUTS)})")
        if name in columns:
            raise RequestError(f"inputs.{name}: given twice")
        if datatype != "BYTES":
            raise RequestError(f"inputs.{name}: datatype must be BYTES, got {datatype}")
        values = list(data.tolist() if hasattr(data, "tolist") else data)
        if len(shape) != 1 or shape[0] != len(values):
            raise RequestError(
                f"inputs.{name}: shape must be [n] matching its {len(values)} values, got {shape}"
            )
        columns[name] = values
    if not columns:
        raise RequestError("inputs: missing (expected BYTES inputs image and/or caption)")
    sizes = {name: len(v) for name, v in columns.items()}
    if len(set(sizes.values())) > 1:
        raise RequestError(f"inputs: lengths differ ({sizes})")
    n = next(iter(sizes.values()))
    raws = []
    for i in range(n):
        image: str | bytes | None = None
        if "image" in columns:
            value = columns["image"][i]
            if not isinstance(value, str | bytes):
                raise RequestError(
                    f"inputs.image[{i}]: expected bytes or a base64 string, "
                    f"got {type(value).__name__}"
                )
            image = value or None
        path = (
            _opt_str(columns["image_path"][i], f"inputs.image_path[{i}]")
            if ("image_path" in columns)
            else None
        )
        caption = (
            _opt_str(columns["caption"][i], f"inputs.caption[{i}]")
            if ("caption" in columns)
            else None
        )
        raws.append(
            RawInstance(
                image_b64=image if isinstance(image, str) else None,
                image_bytes=image if isinstance(image, bytes) else None,
                image_path=path or None,
                caption=caption,
            )
        )
    return ParsedRequest(task, raws)


def check_request(req: ParsedRequest, cfg: ServeConfig) -> None:
    """Counts, required fields and caption lengths (cheap checks, before any decoding)."""
    n = len(req.instances)
    if n == 0:
        raise RequestError("instances: empty (send at least one instance)")
    if n > cfg.max_instances:
        raise RequestError(f"instances: {n} in one request, the limit is {cfg.max_instances}")
    for i, raw in enumerate(req.instances):
        has_image = raw.has_image
        if raw.image_path is not None and raw.image_size:
            raise RequestError(f"instances[{i}]: give image or image_path, not both")
        if req.task == "score" and not (has_image and raw.caption is not None):
            raise RequestError(f"instances[{i}]: task 'score' needs an image and a caption")
        if req.task == "classify" and not has_image:
            raise RequestError(f"instances[{i}]: task 'classify' needs an image")
        if req.task == "embed" and not (has_image or raw.caption is not None):
            raise RequestError(f"instances[{i}]: task 'embed' needs an image or a caption")
        if raw.caption is not None:
            if not raw.caption.strip():
                raise RequestError(f"instances[{i}].caption: empty")
            if len(raw.caption) > cfg.max_caption_chars:
                raise RequestError(
                    f"instances[{i}].caption: {len(raw.caption)} characters, "
                    f"the limit is {cfg.max_caption_chars}"
                )
        if raw.image_b64 is not None or raw.image_bytes is not None:
            limit = 4 * ((cfg.max_image_bytes + 2) // 3)
            if raw.image_size > limit:
                raise RequestError(
                    f"instances[{i}].image: about {raw.image_size * 3 // 4} bytes or more, "
                    f"the limit is {cfg.max_image_bytes}"
                )


def instance_image_bytes(raw: RawInstance, i: int, cfg: ServeConfig) -> bytes:
    """The image file bytes of instance ``i`` (base64 decoded, or read from its allowed path)."""
    sent = raw.image_b64 if raw.image_b64 is not None else raw.image_bytes
    if sent is not None:
        data = image_payload(sent, f"instances[{i}].image")
    else:
        data = _read_allowed(str(raw.image_path), i, cfg)
    if len(data) > cfg.max_image_bytes:
        raise RequestError(
            f"instances[{i}].image: {len(data)} bytes, the limit is {cfg.max_image_bytes}"
        )
    return data


def _read_allowed(path: str, i: int, cfg: ServeConfig) -> bytes:
    where = f"instances[{i}].image_path"
    if not cfg.allowed_image_root:
        raise RequestError(f"{where}: image paths are not accepted by this server (send base64)")
    root = Path(os.path.realpath(cfg.allowed_image_root))
    target = Path(os.path.realpath(root / path))
    if not target.is_relative_to(root):
        raise RequestError(f"{where}: {path!r} is outside the allowed image root")
    try:
        size = target.stat().st_size
        if size > cfg.max_image_bytes:
            raise RequestError(f"{where}: {size} bytes, the limit is {cfg.max_image_bytes}")
        return target.read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
        raise RequestError(f"{where}: {path!r} not found under the allowed image root") from exc
    except OSError as exc:
        raise RequestError(f"{where}: {path!r} cannot be read ({exc.strerror})") from exc


def decode_instance(raw: RawInstance, i: int, cfg: ServeConfig) -> Pair:
    """Decode one instance's image (base64 or allowed path) within the byte/pixel limits."""
    image = None
    if raw.has_image:
        data = instance_image_bytes(raw, i, cfg)
        try:
            image = decode_image(data, max_pixels=cfg.max_image_pixels).image
        except DecodeError as exc:
            if exc.reason == "decompression_bomb":
                raise RequestError(
                    f"instances[{i}].image: too many pixels ({exc.detail}); the limit is "
                    f"{cfg.max_image_pixels}"
                ) from exc
            raise RequestError(f"instances[{i}].image: {exc.reason} ({exc.detail})") from exc
    return Pair(image=image, caption=raw.caption)


def decode_request(req: ParsedRequest, cfg: ServeConfig) -> list[Pair]:
    """All instances decoded (run on a worker thread: base64 and image decoding are CPU).

    The decoded pixels of one request are capped by ``serve.max_request_pixels`` (many small
    files that each decode to many pixels would otherwise fill memory within every per-image
    limit).
    """
    pairs = []
    total = 0
    for i, raw in enumerate(req.instances):
        pair = decode_instance(raw, i, cfg)
        if pair.image is not None:
            total += pair.image.width * pair.image.height
            if total > cfg.max_request_pixels:
                raise RequestError(
                    f"instances[{i}].image: the request's images decode to more than "
                    f"{cfg.max_request_pixels} pixels in total (serve.max_request_pixels)"
                )
        pairs.append(pair)
    return pairs
