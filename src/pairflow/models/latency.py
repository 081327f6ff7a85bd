"""What every variant is measured on: held-out recall@1 and interleaved latency.

Latency is one *pair request*: embed a batch of B images and their B captions (both towers),
timed at a fixed thread count (torch ``set_num_threads`` and ORT ``intra_op_num_threads``).
Variants are timed interleaved (round-robin, one call each per round), so load from other
processes on a shared machine hits every variant alike; absolute numbers stay noisy, ratios
much less so. :func:`measure_saved_latency` does this in a fresh process
(:mod:`pairflow.models.latency_worker`) where torch's OpenMP threads do not spin
(``OMP_WAIT_POLICY=PASSIVE``, like the ONNX Runtime sessions): the fair torch baseline.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pairflow.config import S3Config
from pairflow.errors import InputDataError, PairflowError
from pairflow.models.runners import ClipRunner
from pairflow.models.scoring import Collate, PairDataset, torch_threads

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # pixel_values, input_ids, attention_mask


@dataclass
class HeldOut:
    """Preprocessed held-out rows in batches, with the ids and captions of the rows used."""

    batches: list[Batch]
    ids: list[str]
    captions: list[str]
    failed: int
    pad_id: int = 0

    @property
    def rows(self) -> int:
        return len(self.ids)

    def pixels(self) -> list[np.ndarray]:
        return [b[0] for b in self.batches]

    def batch_of(self, size: int) -> Batch:
        """``size`` rows (repeating rows when fewer exist), padded to one sequence length."""
        if not self.batches:
            raise InputDataError("held-out set is empty: nothing to time")
        width = max(b[1].shape[1] for b in self.batches)

        def pad(a: np.ndarray, value: int) -> np.ndarray:
            return np.pad(a, ((0, 0), (0, width - a.shape[1])), constant_values=value)

        pixels = np.concatenate([b[0] for b in self.batches])
        ids = np.concatenate([pad(b[1], self.pad_id) for b in self.batches])
        mask = np.concatenate([pad(b[2], 0) for b in self.batches])
        take = np.arange(size) % len(pixels)
        return pixels[take], ids[take], mask[take]


def load_held_out(
    frame: pd.DataFrame,
    processor: object,
    max_length: int,
    *,
    batch_size: int = 64,
    max_rows: int | None = None,
    s3: S3Config | None = None,
) -> HeldOut:
    """Read, decode and preprocess ``frame``'s rows (up to ``max_rows``) into batches.

    Rows whose image cannot be read are skipped and counted in ``failed``.
    """
    df = frame.iloc[:max_rows] if max_rows else frame
    dataset = PairDataset(df["image"].tolist(), df["caption"].tolist(), s3)
    collate = Collate(processor, max_length)  # type: ignore[arg-type]
    ids = [str(v) for v in df["id"]]
    batches: list[Batch] = []
    kept_ids: list[str] = []
    captions: list[str] = []
    failed = 0
    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        b = collate(items)
        failed += len(b.failures)
        if b.pixel_values is None or b.input_ids is None or b.attention_mask is None:
            continue
        batches.append(
            (
                b.pixel_values.numpy().astype(np.float32),
                b.input_ids.numpy().astype(np.int64),
                b.attention_mask.numpy().astype(np.int64),
            )
        )
        kept_ids += [ids[i] for i in b.indices.tolist()]
        captions += [dataset.captions[i] for i in b.indices.tolist()]
    pad_id = getattr(getattr(processor, "tokenizer", None), "pad_token_id", None) or 0
    return HeldOut(batches, kept_ids, captions, failed, int(pad_id))


def embed_all(runner: ClipRunner, held: HeldOut) -> tuple[np.ndarray, np.ndarray]:
    """(image, text) embeddings of every held-out row."""
    imgs = [runner.embed_images(p) for p, _, _ in held.batches]
    txts = [runner.embed_texts(i, m) for _, i, m in held.batches]
    return np.concatenate(imgs), np.concatenate(txts)


def recall_at_1(image_emb: np.ndarray, text_emb: np.ndarray, captions: Sequence[str]) -> float:
    """Image -> text recall@1: the best-scoring caption is the row's own (or an identical one)."""
    if len(image_emb) == 0:
        raise InputDataError("recall@1 needs at least one held-out row")
    sims = image_emb @ text_emb.T
    best = np.argmax(sims, axis=1)
    hits = [captions[int(j)] == captions[i] for i, j in enumerate(best)]
    return float(np.mean(hits))


def _pair_call(runner: ClipRunner, batch: Batch) -> Callable[[], None]:
    pixels, ids, mask = batch
    classify = getattr(runner, "classify", None)

    def call() -> None:
        if classify is not None:  # a classifier request: towers + fusion head
            classify(pixels, ids, mask)
            return
        runner.embed_images(pixels)
        runner.embed_texts(ids, mask)

    return call


def _quantile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    pos = q * (len(ordered) - 1)
    lo, hi = int(np.floor(pos)), int(np.ceil(pos))
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


Latency = dict[str, dict[str, dict[str, float]]]  # variant -> batch size -> figure -> value


def measure_latency(
    runners: Mapping[str, ClipRunner],
    held: HeldOut,
    batch_sizes: Sequence[int],
    threads: int,
    repeats: int,
    warmup: int = 2,
    progress: Callable[[str], None] | None = None,
) -> Latency:
    """Per variant, per batch size: p50/p95 ms of a pair request (a classify request for
    classifier runners) and pairs/s at p50.

    ONNX runners must have been created with ``threads`` intra-op threads; torch runs under
    ``torch.set_num_threads(threads)`` here.
    """
    out: Latency = {name: {} for name in runners}
    with torch_threads(threads), torch.inference_mode():
        for size in batch_sizes:
            batch = held.batch_of(size)
            calls = {name: _pair_call(r, batch) for name, r in runners.items()}
            for call in calls.values():
                for _ in range(warmup):
                    call()
            samples: dict[str, list[float]] = {name: [] for name in calls}
            for _ in range(repeats):
                for name, call in calls.items():  # interleaved: one call per variant per round
                    start = time.perf_counter()
                    call()
                    samples[name].append(time.perf_counter() - start)
            for name, s in samples.items():
                p50 = statistics.median(s)
                out[name][str(size)] = {
                    "p50_ms": round(p50 * 1e3, 3),
                    "p95_ms": round(_quantile(s, 0.95) * 1e3, 3),
                    "pairs_per_s": round(size / p50, 2),
                }
            if progress is not None:
                progress(f"latency batch {size}: done")
    return out


def fair_latency_env(threads: int) -> dict[str, str]:
    """The environment of a latency process: ``threads`` OpenMP/MKL threads that sleep
    instead of spinning when idle (what ORT's ``allow_spinning=0`` does for its pool)."""
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS=str(threads),
        MKL_NUM_THREADS=str(threads),
        OMP_WAIT_POLICY="PASSIVE",
    )
    return env


def measure_saved_latency(
    variants: Mapping[str, tuple[Path, str]],
    held: HeldOut,
    batch_sizes: Sequence[int],
    threads: int,
    repeats: int,
    warmup: int = 2,
    progress: Callable[[str], None] | None = None,
) -> tuple[Latency, dict[str, object]]:
    """:func:`measure_latency` of saved variants (``name -> (folder, kind)``) in a fresh
    process with :func:`fair_latency_env`; returns (latency, the worker's thread setup)."""
    batch = held.batch_of(max(batch_sizes))
    with tempfile.TemporaryDirectory(prefix="pairflow-latency-") as tmp:
        inputs, out, spec_path = (
            Path(tmp) / "inputs.npz",
            Path(tmp) / "out.json",
            Path(tmp) / "spec.json",
        )
        np.savez(inputs, pixels=batch[0], ids=batch[1], mask=batch[2])
        spec = {
            "variants": {name: [str(path), kind] for name, (path, kind) in variants.items()},
            "inputs": str(inputs),
            "batch_sizes": list(batch_sizes),
            "threads": threads,
            "repeats": repeats,
            "warmup": warmup,
            "out": str(out),
        }
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, "-m", "pairflow.models.latency_worker", str(spec_path)]
        proc = subprocess.Popen(
            cmd,
            env=fair_latency_env(threads),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        lines: list[str] = []
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            if progress is not None and line.startswith("latency batch"):
                progress(line.strip())
        if proc.wait() != 0 or not out.is_file():
            tail = "\n".join(lines[-15:])
            raise PairflowError(
                f"latency measurement process failed (exit {proc.returncode}):\n{tail}"
            )
        result = json.loads(out.read_text())
    return result["latency"], result["setup"]
