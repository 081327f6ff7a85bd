"""Batched CLIP scoring: DataLoader workers read, decode and preprocess while the model runs.

Each worker reads a row's image (retrying transient read errors with backoff), decodes it
with :func:`pairflow.data.decode.decode_image`, and its ``collate_fn`` runs the model's own
``CLIPProcessor`` on the whole batch (pixels and tokens), so the main process only runs the
two towers. Rows whose image cannot be read or decoded come back as failures with a reason
code (``missing_file``, ``unreadable_image``, a :class:`DecodeError` reason, or
``preprocess_failed``): they are never a crash.

Score = cosine similarity of the L2-normalised image and text embeddings (``[-1, 1]``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from pairflow.clipfilter.model import LoadedClip
from pairflow.clipfilter.select import Failure
from pairflow.config import ClipFilterConfig, S3Config
from pairflow.data import imageio
from pairflow.data import s3 as s3io
from pairflow.data.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image
from pairflow.errors import InputDataError

if TYPE_CHECKING:
    from PIL import Image
    from transformers import CLIPProcessor

MAX_STREAMS = 2
_BACKOFF_S = 0.2
_BACKOFF_MAX_S = 5.0
_PROCESSOR_ERRORS: tuple[type[Exception], ...] = (ValueError, TypeError, RuntimeError, OSError)


@dataclass
class ScoreResult:
    """Per input row (positional): score (NaN if unscored), float16 embeddings, failures."""

    scores: np.ndarray  # float32 (n,)
    image_emb: np.ndarray  # float16 (n, d), L2-normalised; zeros where unscored
    text_emb: np.ndarray  # float16 (n, d)
    failures: dict[int, Failure] = field(default_factory=dict)
    seconds: float = 0.0
    workers: int = 0
    torch_threads: int = 0

    @property
    def scored(self) -> np.ndarray:
        """Boolean mask of rows that have a score."""
        return np.asarray(np.isfinite(self.scores), dtype=bool)

    @property
    def rows_per_s(self) -> float:
        return len(self.scores) / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Item:
    index: int
    caption: str
    image: Image.Image | None
    failure: Failure | None


@dataclass
class Batch:
    """A preprocessed batch: row positions, model inputs, and rows that failed."""

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


def _missing(value: object) -> bool:
    if value is None:
        return True
    return isinstance(value, float) and np.isnan(value)


def _get(obj: object, name: str) -> Any:
    """A field of a size spec: a dict (transformers 4) or a SizeDict (transformers 5)."""
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


class FastPixels:
    """``CLIPImageProcessor`` output, vectorised, for images already at the crop size.

    For such images the processor's resize (shortest edge = crop size) and centre crop are
    identities, so pixels are just rescaled and normalised; the result equals the
    processor's (checked by a test). Other image sizes go through the processor itself.
    """

    def __init__(self, height: int, width: int, scale: float, mean: Any, std: Any) -> None:
        self.size = (width, height)
        m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        # (x * scale - mean) / std as one multiply-add per channel
        self.mul = scale / s
        self.add = -m / s

    @classmethod
    def from_processor(cls, image_processor: Any) -> FastPixels | None:
        """The fast path for a standard CLIP image pipeline, else None."""
        ip = image_processor
        crop = getattr(ip, "crop_size", None)
        h, w = _get(crop, "height"), _get(crop, "width")
        edge = _get(getattr(ip, "size", None), "shortest_edge")
        flags = all(
            getattr(ip, f, False) is True
            for f in ("do_resize", "do_center_crop", "do_rescale", "do_normalize")
        )
        mean, std = getattr(ip, "image_mean", None), getattr(ip, "image_std", None)
        if not (flags and h and w and h == w == edge and mean is not None and std is not None):
            return None
        if len(mean) != 3 or len(std) != 3:
            return None
        return cls(int(h), int(w), float(ip.rescale_factor), list(mean), list(std))

    def __call__(self, images: Sequence[Image.Image]) -> torch.Tensor | None:
        """(B, 3, H, W) float32 pixel values, or None if any image is not at the crop size."""
        if any(im.size != self.size or im.mode != "RGB" for im in images):
            return None
        arr = torch.from_numpy(np.stack([np.asarray(im, dtype=np.uint8) for im in images]))
        pixels = arr.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
        return pixels.mul_(self.mul).add_(self.add)


class Collate:
    """Batch items: the model's processor turns images and captions into tensors (in workers)."""

    def __init__(self, processor: CLIPProcessor, max_length: int) -> None:
        self.processor = processor
        self.max_length = max_length
        self.fast = FastPixels.from_processor(processor.image_processor)

    def _pixels(self, items: list[_Item]) -> tuple[list[_Item], torch.Tensor | None, list[Any]]:
        images = [it.image for it in items]
        if self.fast is not None:
            fast = self.fast([im for im in images if im is not None])
            if fast is not None:
                return items, fast, []
        try:
            out = self.processor.image_processor(images=images, return_tensors="pt")
            return items, out["pixel_values"], []
        except _PROCESSOR_ERRORS:
            pass  # find the offending image(s) one by one below
        good: list[_Item] = []
        tensors: list[torch.Tensor] = []
        failed: list[tuple[int, Failure]] = []
        for it in items:
            try:
                px = self.processor.image_processor(images=[it.image], return_tensors="pt")
            except _PROCESSOR_ERRORS as exc:
                failed.append((it.index, Failure("preprocess_failed", f"{exc}".split("\n")[0])))
                continue
            good.append(it)
            tensors.append(px["pixel_values"][0])
        return good, (torch.stack(tensors) if tensors else None), failed

    def __call__(self, items: list[_Item]) -> Batch:
        failures = [(it.index, it.failure) for it in items if it.failure is not None]
        ok = [it for it in items if it.failure is None]
        pixel_values: torch.Tensor | None = None
        if ok:
            ok, pixel_values, failed = self._pixels(ok)
            failures.extend(failed)
        input_ids = attention_mask = None
        if ok:
            enc = self.processor.tokenizer(
                [it.caption for it in ok],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            input_ids, attention_mask = enc["input_ids"], enc["attention_mask"]
        return Batch(
            torch.tensor([it.index for it in ok], dtype=torch.long),
            pixel_values,
            input_ids,
            attention_mask,
            failures,
        )


def available_cpus() -> int:
    """CPUs this process may run on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def plan_threads(cfg: ClipFilterConfig, n_rows: int) -> tuple[int, int]:
    """(DataLoader workers, CPU threads for the model) for ``n_rows`` under ``cfg``.

    One batch or less is decoded in-process (no workers to start). Model threads default to
    every CPU: a worker decoding small images needs a fraction of a core, and the model runs
    as single-threaded streams (:func:`plan_streams`), so sharing cores costs little; on two
    cores this is 1.4x faster than leaving the workers' CPUs idle (``bench/filter.py``).
    """
    batches = -(-n_rows // cfg.batch_size)
    workers = 0 if batches <= 1 else min(cfg.num_workers, batches)
    threads = cfg.torch_threads or available_cpus()
    return workers, threads


def plan_streams(threads: int, device: torch.device) -> tuple[int, int]:
    """(concurrent model streams, intra-op threads each) for ``threads`` CPU threads.

    On CPU, up to :data:`MAX_STREAMS` batches run through the model at once from Python
    threads (torch releases the GIL inside ops); for a small model this uses cores much
    better than intra-op threads alone. On CUDA one stream runs.
    """
    if device.type != "cpu" or threads < 2:
        return 1, max(1, threads)
    streams = min(threads, MAX_STREAMS)
    return streams, max(1, threads // streams)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` torch intra-op threads, then restore the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
    s3io.clear_client_cache()  # boto3 clients are not fork-safe: each worker makes its own


def features(out: Any) -> torch.Tensor:
    """Projected embeddings from ``get_*_features`` (a tensor, or an output's pooler_output)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled: torch.Tensor = out.pooler_output
    return pooled


def embed_batch(loaded: LoadedClip, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised float32 (image, text) embeddings of a batch, on the CPU."""
    dev = loaded.device
    non_blocking = dev.type == "cuda"
    if batch.pixel_values is None or batch.input_ids is None:
        raise ValueError("embed_batch: the batch has no scorable rows")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    with torch.inference_mode(), autocast:
        img = features(
            loaded.model.get_image_features(
                pixel_values=batch.pixel_values.to(dev, non_blocking=non_blocking)
            )
        )
        txt = features(
            loaded.model.get_text_features(
                input_ids=batch.input_ids.to(dev, non_blocking=non_blocking),
                attention_mask=None
                if batch.attention_mask is None
                else batch.attention_mask.to(dev, non_blocking=non_blocking),
            )
        )
    img = F.normalize(img.float(), dim=-1)
    txt = F.normalize(txt.float(), dim=-1)
    return img.cpu(), txt.cpu()


def score_frame(
    df: pd.DataFrame,
    loaded: LoadedClip,
    cfg: ClipFilterConfig,
    s3: S3Config | None = None,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> ScoreResult:
    """Score every row of ``df`` (columns ``image``, ``caption``) with ``loaded``."""
    start = time.perf_counter()
    n = len(df)
    dim = loaded.embed_dim
    scores = np.full(n, np.nan, dtype=np.float32)
    image_emb = np.zeros((n, dim), dtype=np.float16)
    text_emb = np.zeros((n, dim), dtype=np.float16)
    failures: dict[int, Failure] = {}
    workers, threads = plan_threads(cfg, n)
    if n == 0:
        return ScoreResult(scores, image_emb, text_emb, failures, 0.0, workers, threads)
    dataset = PairDataset(
        df["image"].tolist(), df["caption"].tolist(), s3, cfg.read_retries, max_pixels
    )
    loader: DataLoader[_Item] = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=Collate(loaded.processor, loaded.max_text_length),
        pin_memory=loaded.device.type == "cuda",
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
    )

    def store(batch: Batch, embedded: tuple[torch.Tensor, torch.Tensor]) -> None:
        img, txt = embedded
        idx = batch.indices.numpy()
        scores[idx] = (img * txt).sum(dim=-1).numpy()
        image_emb[idx] = img.numpy().astype(np.float16)
        text_emb[idx] = txt.numpy().astype(np.float16)

    streams, intra = plan_streams(threads, loaded.device)
    with torch_threads(intra), ThreadPoolExecutor(streams) as pool:
        pending: dict[Future[tuple[torch.Tensor, torch.Tensor]], Batch] = {}
        for batch in loader:
            for pos, failure in batch.failures:
                failures[pos] = failure
            if batch.pixel_values is None or len(batch.indices) == 0:
                continue
            if streams == 1:
                store(batch, embed_batch(loaded, batch))
                continue
            pending[pool.submit(embed_batch, loaded, batch)] = batch
            if len(pending) >= 2 * streams:  # bounded: at most two batches per stream queued
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    store(pending.pop(fut), fut.result())
        for fut, batch in pending.items():
            store(batch, fut.result())
    return ScoreResult(
        scores, image_emb, text_emb, failures, time.perf_counter() - start, workers, threads
    )
