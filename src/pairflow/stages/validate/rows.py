"""Per-row validation of a manifest: captions first (cheap), then each image decoded once.

Kept rows gain what later stages need, so nobody decodes the image again to get it:
``width``, ``height`` (after EXIF orientation), ``img_format``, ``file_bytes`` and the dedupe
signatures (content hash, perceptual hash). Work is spread over processes in chunks; a small
per-process cache means a URI repeated across rows is read and decoded once.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from threadpoolctl import threadpool_limits

from pairflow.config import S3Config, ValidateConfig
from pairflow.data.decode import DecodeError, decode_image
from pairflow.data.imageio import ImageNotFound, read_image_bytes
from pairflow.data.schema import empty_rejected, rejected_frame
from pairflow.data.signatures import (
    IMAGE_HASH_COLUMNS,
    IMAGE_PHASH_COLUMN,
    SIGNATURE_SOURCE_PX,
    content_hash,
    grey_phashes,
    grey_thumbnail,
    signature_thumbnail,
    signature_words,
)
from pairflow.errors import InputDataError
from pairflow.metrics import ValidateMetrics
from pairflow.parallel import available_cpus
from pairflow.stages.validate.captions import CaptionRules, check_caption

log = logging.getLogger(__name__)

STAGE = "validate"
FACT_COLUMNS: tuple[str, ...] = ("width", "height", "img_format", "file_bytes")
INT_FACTS = frozenset({"width", "height", "file_bytes"})
CHUNK_ROWS = 512
# Large JPEGs are decoded by DCT scaling to >= 4x the signature's 16 px (a 1/8-scale pixel
# is its 8x8 block's mean, so the box thumbnail barely moves: layout RMS < 1 against a full
# decode). Scaling down to the thumbnail itself moved near-duplicate layouts enough to cost
# 7 points of recall on the generator, so small images decode fully.
DECODE_AT_LEAST = 4 * SIGNATURE_SOURCE_PX
THUMBNAIL = "signature_thumbnail"  # fact holding the 768-byte thumbnail of a kept image
GREY_THUMBNAIL = "grey_thumbnail"  # fact holding the 1024-byte grey pHash thumbnail
_CACHE_SIZE = 4096

# A row's outcome: (reason, detail, facts). reason None = kept, facts then hold the columns.
Outcome = tuple[str | None, str, dict[str, Any] | None]


@dataclass(frozen=True)
class ImageRules:
    """The image part of :class:`ValidateConfig`."""

    formats: frozenset[str]
    min_w: int
    min_h: int
    max_w: int
    max_h: int
    max_aspect: float
    max_pixels: int
    max_bytes: int

    @classmethod
    def from_config(cls, cfg: ValidateConfig) -> ImageRules:
        return cls(
            frozenset(cfg.allowed_formats),
            cfg.min_width,
            cfg.min_height,
            cfg.max_width,
            cfg.max_height,
            cfg.max_aspect_ratio,
            cfg.max_pixels,
            cfg.max_file_bytes,
        )


def check_image_bytes(data: bytes, rules: ImageRules) -> Outcome:
    """Decode ``data`` once and check it; kept images come back with facts and signatures."""
    if len(data) > rules.max_bytes:
        return "file_too_large", f"{len(data)} bytes > {rules.max_bytes}", None
    try:
        decoded = decode_image(data, rules.max_pixels, at_least=DECODE_AT_LEAST)
    except DecodeError as exc:
        return exc.reason, exc.detail, None
    if decoded.format not in rules.formats:
        return "format_not_allowed", f"{decoded.format} not in {sorted(rules.formats)}", None
    w, h = decoded.width, decoded.height
    if w < rules.min_w or h < rules.min_h:
        return "image_too_small", f"{w}x{h} < {rules.min_w}x{rules.min_h}", None
    if w > rules.max_w or h > rules.max_h:
        return "image_too_large", f"{w}x{h} > {rules.max_w}x{rules.max_h}", None
    aspect = max(w / h, h / w)
    if aspect > rules.max_aspect:
        return "aspect_ratio", f"{w}x{h}: ratio {aspect:.2f} > {rules.max_aspect}", None
    facts: dict[str, Any] = {
        "width": w,
        "height": h,
        "img_format": decoded.format,
        "file_bytes": len(data),
        "img_sha256": content_hash(data),
        # the dedupe signature is computed per chunk from this (see signature_words)
        THUMBNAIL: signature_thumbnail(decoded.image),
        GREY_THUMBNAIL: grey_thumbnail(decoded.image),
    }
    return None, "", facts


class _Checker:
    """Row checks with a bounded per-process cache of image outcomes by URI."""

    def __init__(self, cfg: ValidateConfig, s3: S3Config | None) -> None:
        self.captions = CaptionRules.from_config(cfg)
        self.images = ImageRules.from_config(cfg)
        self.s3 = s3
        self.cache: OrderedDict[str, Outcome] = OrderedDict()

    def image(self, uri: str) -> Outcome:
        hit = self.cache.get(uri)
        if hit is not None:
            self.cache.move_to_end(uri)
            return hit
        try:
            outcome = check_image_bytes(read_image_bytes(uri, self.s3), self.images)
        except ImageNotFound as exc:
            outcome = ("missing_file", str(exc), None)
        except InputDataError as exc:
            outcome = ("unreadable_image", str(exc), None)
        self.cache[uri] = outcome
        if len(self.cache) > _CACHE_SIZE:
            self.cache.popitem(last=False)
        return outcome

    def row(self, uri: object, caption: object, label: object) -> Outcome:
        failed = check_caption(caption, label, self.captions)
        if failed is not None:
            return failed[0], failed[1], None
        if not isinstance(uri, str) or not uri:
            return "missing_image_ref", "no image reference", None
        return self.image(uri)


_WORKER: _Checker | None = None


def _init_worker(cfg_json: str, s3_json: str | None) -> None:
    global _WORKER
    cfg = ValidateConfig.model_validate_json(cfg_json)
    s3 = S3Config.model_validate_json(s3_json) if s3_json else None
    _WORKER = _Checker(cfg, s3)


@dataclass
class ChunkResult:
    """Outcomes of a chunk of rows, columnar so a million rows stay small in memory."""

    reasons: list[str | None]
    details: list[str]
    facts: dict[str, list[Any]]  # one list per fact column, kept rows only
    hashes: npt.NDArray[np.int64]  # (kept rows, hash columns)
    phashes: npt.NDArray[np.int64]  # (kept rows,) grey pHashes


def _init_pool_worker(cfg_json: str, s3_json: str | None) -> None:
    # Signatures are tiny matrix products: BLAS threads only contend with the other workers.
    threadpool_limits(1)
    _init_worker(cfg_json, s3_json)


def _check_chunk(rows: list[tuple[object, object, object]]) -> ChunkResult:
    assert _WORKER is not None, "worker not initialised"
    outcomes = [_WORKER.row(*r) for r in rows]
    kept = [o[2] for o in outcomes if o[0] is None and o[2] is not None]
    facts = {c: [f[c] for f in kept] for c in (*FACT_COLUMNS, "img_sha256")}
    thumbs = np.frombuffer(b"".join(f[THUMBNAIL] for f in kept), dtype=np.uint8)
    greys = np.frombuffer(b"".join(f[GREY_THUMBNAIL] for f in kept), dtype=np.uint8)
    return ChunkResult(
        reasons=[o[0] for o in outcomes],
        details=[o[1] for o in outcomes if o[0] is not None],
        facts=facts,
        hashes=signature_words(thumbs).reshape(len(kept), len(IMAGE_HASH_COLUMNS)),
        phashes=grey_phashes(greys),
    )


def _chunks(df: pd.DataFrame, size: int) -> Iterator[list[tuple[object, object, object]]]:
    triples = list(
        zip(df["image"].tolist(), df["caption"].tolist(), df["label"].tolist(), strict=True)
    )
    for i in range(0, len(triples), size):
        yield triples[i : i + size]


def worker_count(requested: int, rows: int) -> int:
    """Processes to use: ``requested`` or the CPUs this process may run on, never idle ones."""
    n = requested or available_cpus()
    return max(1, min(n, -(-rows // CHUNK_ROWS)))


@dataclass
class ValidationResult:
    kept: pd.DataFrame
    rejected: pd.DataFrame
    counts: dict[str, int]
    metrics: dict[str, Any]


def validate_frame(
    df: pd.DataFrame,
    cfg: ValidateConfig,
    s3: S3Config | None = None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ValidationResult:
    """Check every row of ``df``; kept rows gain facts and signatures, rejects get reasons."""
    start = time.perf_counter()
    workers = worker_count(cfg.workers, len(df))
    results: list[ChunkResult] = []
    if workers == 1:
        _init_worker(cfg.model_dump_json(), s3.model_dump_json() if s3 else None)
        with threadpool_limits(1):
            chunks: Iterator[ChunkResult] = map(_check_chunk, _chunks(df, CHUNK_ROWS))
            results = _collect(chunks, len(df), progress)
    else:
        ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
        with ProcessPoolExecutor(
            workers,
            mp_context=ctx,
            initializer=_init_pool_worker,
            initargs=(cfg.model_dump_json(), s3.model_dump_json() if s3 else None),
        ) as pool:
            results = _collect(pool.map(_check_chunk, _chunks(df, CHUNK_ROWS)), len(df), progress)
    return _assemble(df, results, workers, time.perf_counter() - start)


def _collect(
    chunks: Iterator[ChunkResult], total: int, progress: Callable[[int, int], None] | None
) -> list[ChunkResult]:
    out: list[ChunkResult] = []
    done = 0
    for chunk in chunks:
        out.append(chunk)
        done += len(chunk.reasons)
        if progress:
            progress(done, total)
    return out


def _assemble(
    df: pd.DataFrame, results: list[ChunkResult], workers: int, seconds: float
) -> ValidationResult:
    reasons = [r for chunk in results for r in chunk.reasons]
    mask = pd.Series([r is None for r in reasons], index=df.index, dtype=bool)
    kept = df[mask].reset_index(drop=True)
    for col in (*FACT_COLUMNS, "img_sha256"):
        values = [v for chunk in results for v in chunk.facts[col]]
        kept[col] = pd.Series(values, dtype="int64" if col in INT_FACTS else "object")
    hashes = (
        np.concatenate([c.hashes for c in results])
        if results
        else np.empty((0, len(IMAGE_HASH_COLUMNS)), dtype=np.int64)
    )
    kept = pd.concat(
        [kept, pd.DataFrame(hashes, columns=list(IMAGE_HASH_COLUMNS), dtype="int64")], axis=1
    )
    phashes = [c.phashes for c in results]
    kept[IMAGE_PHASH_COLUMN] = pd.Series(
        np.concatenate(phashes) if phashes else np.empty(0, dtype=np.int64), dtype="int64"
    )
    bad = [r for r in reasons if r is not None]
    details = [d for chunk in results for d in chunk.details]
    if bad:
        rejected = rejected_frame(df[~mask], bad, details, stage=STAGE)
    else:
        rejected = empty_rejected(list(df.columns))
    rate = len(df) / seconds if seconds > 0 else 0.0
    metrics = ValidateMetrics(workers=workers, rows_per_s=round(rate, 1)).to_json()
    return ValidationResult(kept, rejected, dict(Counter(bad)), metrics)
