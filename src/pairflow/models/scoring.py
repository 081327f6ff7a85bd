"""Batched CLIP scoring: images are read and decoded while the model runs.

A DataLoader (worker processes, or in-process when the model's streams already fill every
CPU: :func:`plan_threads`) reads each row's image (retrying transient read errors), decodes
it and batches the pixels (:mod:`pairflow.models.batches`): images already at the
model's size travel as uint8 and are normalised next to the model. Captions are tokenised
once per frame in the main process while the first images decode. The main process runs the
two towers as concurrent streams. Rows whose image cannot be read or decoded come back as
failures with a reason code (``missing_file``, ``unreadable_image``, a decode reason, or
``preprocess_failed``): they are never a crash.

Score = cosine similarity of the L2-normalised image and text embeddings (``[-1, 1]``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from pairflow.config import ClipFilterConfig, S3Config
from pairflow.data import s3 as s3io
from pairflow.data.decode import DEFAULT_MAX_PIXELS
from pairflow.data.imageio import split_tar_member
from pairflow.data.pixels import SizedPixels
from pairflow.models.batches import (
    Batch,
    CaptionTokens,
    Collate,
    Failure,
    PairDataset,
    RawCollate,
    _Item,
    read_with_retries,
)
from pairflow.models.clip import LoadedClip, features
from pairflow.parallel import available_cpus

__all__ = [
    "MAX_STREAMS",
    "Batch",
    "CaptionTokens",
    "Collate",
    "PairDataset",
    "RawCollate",
    "ScoreResult",
    "available_cpus",
    "embed_batch",
    "plan_streams",
    "plan_threads",
    "read_with_retries",
    "reads_remote",
    "score_frame",
    "torch_threads",
]

MAX_STREAMS = 2
STREAM_MAX_PARAMS = 20_000_000  # larger models run as one stream with every thread


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


def plan_threads(
    cfg: ClipFilterConfig, n_rows: int, *, remote_reads: bool = False
) -> tuple[int, int]:
    """(DataLoader workers, CPU threads for the model) for ``n_rows`` under ``cfg``.

    Model threads default to every CPU (run as single-threaded streams, see
    :func:`plan_streams`). Images are decoded in-process, with no workers to start, when
    there is one batch or less, or when the model's streams already fill every CPU
    (<= :data:`MAX_STREAMS` CPUs) and reads are local: worker processes would then only
    compete for the same cores and add start-up and inter-process copies (``bench/filter.py``
    measures both). ``remote_reads`` (plain ``s3://`` objects: reads wait on the network)
    keeps ``cfg.num_workers`` so reads overlap.
    """
    batches = -(-n_rows // cfg.batch_size)
    threads = cfg.torch_threads or available_cpus()
    cores_spare = available_cpus() > MAX_STREAMS
    workers = cfg.num_workers if (cores_spare or remote_reads) else 0
    return (0 if batches <= 1 else min(workers, batches)), threads


def reads_remote(images: Sequence[object]) -> bool:
    """True when any image is a plain ``s3://`` object (S3 tar members are read from a local
    cache once their shard is downloaded)."""
    return any(
        isinstance(u, str) and u.startswith("s3://") and split_tar_member(u) is None for u in images
    )


def plan_streams(
    threads: int,
    device: torch.device,
    *,
    params: int | None = None,
    batches: int | None = None,
) -> tuple[int, int]:
    """(concurrent model streams, intra-op threads each) for ``threads`` CPU threads.

    On CPU, up to :data:`MAX_STREAMS` batches run through the model at once from Python
    threads (torch releases the GIL inside ops); for a small model this uses cores much
    better than intra-op threads alone. A model of more than :data:`STREAM_MAX_PARAMS`
    parameters keeps every core busy inside each op, so it runs as one stream with all
    threads (ViT-B/32 on 2 cores: 13.8 vs 8.3 pairs/s), as does a single batch. On CUDA one
    stream runs.
    """
    single = (params is not None and params > STREAM_MAX_PARAMS) or (
        batches is not None and batches < 2
    )
    if device.type != "cpu" or threads < 2 or single:
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


def embed_batch(loaded: LoadedClip, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised float32 (image, text) embeddings of a batch, on the CPU.

    uint8 pixel values (from :class:`RawCollate`) are normalised first, on the model's device.
    """
    dev = loaded.device
    non_blocking = dev.type == "cuda"
    if batch.pixel_values is None or batch.input_ids is None:
        raise ValueError("embed_batch: the batch has no scorable rows")
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    with torch.inference_mode(), autocast:
        pixels = batch.pixel_values.to(dev, non_blocking=non_blocking)
        if pixels.dtype == torch.uint8:  # from RawCollate: normalise here, next to the model
            sized = SizedPixels.from_processor(loaded.processor.image_processor)
            if sized is None:
                raise ValueError("embed_batch: uint8 pixels, but the processor is not standard")
            pixels = sized.normalise_tensor(pixels)
        img = features(loaded.model.get_image_features(pixel_values=pixels))
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
    workers: int | None = None,
) -> ScoreResult:
    """Score every row of ``df`` (columns ``image``, ``caption``) with ``loaded``.

    ``workers`` overrides the planned number of DataLoader workers (:func:`plan_threads`).
    """
    start = time.perf_counter()
    n = len(df)
    dim = loaded.embed_dim
    scores = np.full(n, np.nan, dtype=np.float32)
    image_emb = np.zeros((n, dim), dtype=np.float16)
    text_emb = np.zeros((n, dim), dtype=np.float16)
    failures: dict[int, Failure] = {}
    planned, threads = plan_threads(cfg, n, remote_reads=reads_remote(df["image"].tolist()))
    workers = planned if workers is None else workers
    if n == 0:
        return ScoreResult(scores, image_emb, text_emb, failures, 0.0, workers, threads)
    dataset = PairDataset(
        df["image"].tolist(), df["caption"].tolist(), s3, cfg.read_retries, max_pixels
    )
    tokenizer = loaded.processor.tokenizer
    pretokenise = tokenizer.padding_side == "right" and tokenizer.pad_token_id is not None
    collate: RawCollate | Collate = (
        RawCollate(loaded.processor.image_processor)
        if pretokenise
        else Collate(loaded.processor, loaded.max_text_length)
    )
    loader: DataLoader[_Item] = DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=collate,
        pin_memory=loaded.device.type == "cuda",
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
    )
    batches = iter(loader)  # workers start reading and decoding now
    tokens = (
        CaptionTokens.build(tokenizer, dataset.captions, loaded.max_text_length)
        if pretokenise
        else None
    )

    def store(batch: Batch, embedded: tuple[torch.Tensor, torch.Tensor]) -> None:
        img, txt = embedded
        idx = batch.indices.numpy()
        scores[idx] = (img * txt).sum(dim=-1).numpy()
        image_emb[idx] = img.numpy().astype(np.float16)
        text_emb[idx] = txt.numpy().astype(np.float16)

    params = sum(p.numel() for p in loaded.model.parameters())
    n_batches = -(-len(df) // max(1, cfg.batch_size))
    streams, intra = plan_streams(threads, loaded.device, params=params, batches=n_batches)
    with torch_threads(intra), ThreadPoolExecutor(streams) as pool:
        pending: dict[Future[tuple[torch.Tensor, torch.Tensor]], Batch] = {}
        for batch in batches:
            for pos, failure in batch.failures:
                failures[pos] = failure
            if batch.pixel_values is None or len(batch.indices) == 0:
                continue
            if tokens is not None:
                batch.input_ids, batch.attention_mask = tokens.for_rows(batch.indices.numpy())
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
