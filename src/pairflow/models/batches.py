"""Rows to model inputs: read and decode images, preprocess pixels, tokenise captions.

Two ways to batch, one result:

- :class:`PairDataset` + :class:`Collate`: the model's own processor on every batch (float
  pixels and tokens); what evaluate and compress use.
- :class:`PairDataset` + :class:`RawCollate` + :class:`CaptionTokens`: what
  :func:`pairflow.models.scoring.score_frame` uses. Images already at the model's size
  travel as uint8 (a quarter of float32 between processes) and are normalised right before
  the model (:class:`~pairflow.data.pixels.SizedPixels`); captions are tokenised once per
  frame in the main process (one call over the distinct captions) and padded per batch.
  Both give the processor's values (checked by tests).

Rows whose image cannot be read or decoded become failures with a reason code
(``missing_image_ref``, ``missing_file``, ``unreadable_image``, a :class:`DecodeError`
reason, or ``preprocess_failed``): never a crash.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from pairflow.config import S3Config
from pairflow.data import imageio
from pairflow.data.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image
from pairflow.data.pixels import SizedPixels
from pairflow.errors import InputDataError


@dataclass(frozen=True)
class Failure:
    """Why a row could not be scored: a reason code and a one-line detail."""

    reason: str
    detail: str


if TYPE_CHECKING:
    from PIL import Image
    from transformers import CLIPProcessor

_BACKOFF_S = 0.2
_BACKOFF_MAX_S = 5.0
_PROCESSOR_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, RuntimeError, OSError)


@dataclass
class _Item:
    index: int
    caption: str
    image: Image.Image | None
    failure: Failure | None


@dataclass
class Batch:
    """A preprocessed batch: row positions, model inputs, and rows that failed.

    ``pixel_values`` is float32 (model-ready) or, from :class:`RawCollate`, uint8 pixels
    still to be normalised (:func:`pairflow.models.scoring.embed_batch` does it).
    """

    indices: torch.Tensor
    pixel_values: torch.Tensor | None
    input_ids: torch.Tensor | None
    attention_mask: torch.Tensor | None
    failures: list[tuple[int, Failure]]

    def pin_memory(self) -> Batch:
        """Pinned copies for asynchronous host-to-GPU transfer (called by the DataLoader)."""

        def pin(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.pin_memory()

        return Batch(
            self.indices,
            pin(self.pixel_values),
            pin(self.input_ids),
            pin(self.attention_mask),
            self.failures,
        )


def read_with_retries(
    uri: str, s3: S3Config | None, retries: int, sleep: Callable[[float], None] = time.sleep
) -> bytes:
    """Read ``uri``; retry non-``ImageNotFound`` read errors ``retries`` times with backoff."""
    for attempt in range(retries + 1):
        try:
            return imageio.read_image_bytes(uri, s3)
        except imageio.ImageNotFound:
            raise
        except InputDataError:
            if attempt == retries:
                raise
            sleep(min(_BACKOFF_MAX_S, _BACKOFF_S * 2**attempt))
    raise AssertionError("unreachable")


def _missing(value: object) -> bool:
    if value is None:
        return True
    return isinstance(value, float) and np.isnan(value)


class PairDataset(Dataset[_Item]):
    """Rows of a manifest as (decoded RGB image or failure, caption)."""

    def __init__(
        self,
        images: Sequence[object],
        captions: Sequence[object],
        s3: S3Config | None = None,
        read_retries: int = 3,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.images = [None if _missing(u) else str(u) for u in images]
        self.captions = ["" if _missing(c) else str(c) for c in captions]
        self.s3 = s3
        self.read_retries = read_retries
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> _Item:
        uri = self.images[index]
        caption = self.captions[index]
        if uri is None:
            return _Item(index, caption, None, Failure("missing_image_ref", "no image reference"))
        try:
            data = read_with_retries(uri, self.s3, self.read_retries)
        except imageio.ImageNotFound as exc:
            return _Item(index, caption, None, Failure("missing_file", str(exc)))
        except InputDataError as exc:
            return _Item(index, caption, None, Failure("unreadable_image", str(exc)))
        try:
            image = decode_image(data, self.max_pixels).image
        except DecodeError as exc:
            return _Item(index, caption, None, Failure(exc.reason, f"{uri}: {exc.detail}"))
        return _Item(index, caption, image, None)


def processor_pixels(
    image_processor: Any, items: list[_Item]
) -> tuple[list[_Item], torch.Tensor | None, list[tuple[int, Failure]]]:
    """(items kept, their float pixel values, failed rows) through the processor itself;
    if the batch fails, image by image so only the offending rows fail."""
    try:
        out = image_processor(images=[it.image for it in items], return_tensors="pt")
        return items, out["pixel_values"], []
    except _PROCESSOR_ERRORS:
        pass  # find the offending image(s) one by one below
    good: list[_Item] = []
    tensors: list[torch.Tensor] = []
    failed: list[tuple[int, Failure]] = []
    for it in items:
        try:
            px = image_processor(images=[it.image], return_tensors="pt")
        except _PROCESSOR_ERRORS as exc:
            failed.append((it.index, Failure("preprocess_failed", f"{exc}".split("\n")[0])))
            continue
        good.append(it)
        tensors.append(px["pixel_values"][0])
    return good, (torch.stack(tensors) if tensors else None), failed


class RawCollate:
    """Batch items into row positions and pixels, without tokens (see :class:`CaptionTokens`).

    When every image is already at the model's size, pixels stay uint8 [N, 3, S, S]
    (normalised just before the model); otherwise the processor makes float pixels.
    """

    def __init__(self, image_processor: Any) -> None:
        self.image_processor = image_processor
        self.sized = SizedPixels.from_processor(image_processor)

    def __call__(self, items: list[_Item]) -> Batch:
        failures = [(it.index, it.failure) for it in items if it.failure is not None]
        ok = [it for it in items if it.failure is None and it.image is not None]
        pixels: torch.Tensor | None = None
        if ok:
            images = [it.image for it in ok if it.image is not None]
            raw = None if self.sized is None else self.sized.raw(images)
            if raw is not None:
                pixels = torch.from_numpy(raw)
            else:
                ok, pixels, failed = processor_pixels(self.image_processor, ok)
                failures.extend(failed)
        indices = torch.tensor([it.index for it in ok], dtype=torch.long)
        return Batch(indices, pixels, None, None, failures)


class Collate:
    """Batch items with the model's processor: float pixels and padded tokens."""

    def __init__(self, processor: CLIPProcessor, max_length: int) -> None:
        self.processor = processor
        self.max_length = max_length
        self.raw = RawCollate(processor.image_processor)

    def __call__(self, items: list[_Item]) -> Batch:
        batch = self.raw(items)
        if batch.pixel_values is not None and batch.pixel_values.dtype == torch.uint8:
            assert self.raw.sized is not None
            batch.pixel_values = self.raw.sized.normalise_tensor(batch.pixel_values)
        if len(batch.indices):
            by_index = {it.index: it.caption for it in items}
            enc = self.processor.tokenizer(
                [by_index[i] for i in batch.indices.tolist()],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            batch.input_ids, batch.attention_mask = enc["input_ids"], enc["attention_mask"]
        return batch


@dataclass(frozen=True)
class CaptionTokens:
    """Every row's caption tokenised once; :meth:`for_rows` pads a batch's like the tokenizer
    does (``padding=True, truncation=True``: right-padded to the batch's longest)."""

    table: np.ndarray  # int64 [distinct captions, longest], right-padded with pad_id
    lengths: np.ndarray  # int64 [distinct captions]
    row_caption: np.ndarray  # int64 [rows]: index into table

    @classmethod
    def build(cls, tokenizer: Any, captions: Sequence[str], max_length: int) -> CaptionTokens:
        """Tokenise the distinct ``captions`` in one call (right padding only)."""
        if getattr(tokenizer, "padding_side", "right") != "right":
            raise ValueError("CaptionTokens: only right-padding tokenizers are supported")
        pad_id = tokenizer.pad_token_id
        if pad_id is None:
            raise ValueError("CaptionTokens: the tokenizer has no pad token")
        distinct, row_caption = np.unique(np.asarray(captions, dtype=object), return_inverse=True)
        ids: list[list[int]] = tokenizer(
            [str(c) for c in distinct], truncation=True, max_length=max_length
        )["input_ids"]
        lengths = np.fromiter((len(t) for t in ids), dtype=np.int64, count=len(ids))
        table = np.full((len(ids), int(lengths.max(initial=1))), int(pad_id), dtype=np.int64)
        for row, tokens in enumerate(ids):
            table[row, : len(tokens)] = tokens
        return cls(table, lengths, np.asarray(row_caption, dtype=np.int64).reshape(-1))

    def for_rows(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) int64 [len(rows), longest in these rows]."""
        which = self.row_caption[rows]
        lengths = self.lengths[which]
        width = int(lengths.max(initial=1))
        ids = np.ascontiguousarray(self.table[which, :width])
        mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
        return torch.from_numpy(ids), torch.from_numpy(mask)
