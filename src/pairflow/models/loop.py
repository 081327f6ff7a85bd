"""The training loop shared by ``train`` and ``compress`` (distillation): :func:`fit`.

``fit(model, objective, train_set, collate, settings=..., ...)`` trains ``model`` in place:

- **model**: an ``nn.Module`` whose ``forward(batch)`` takes the collated batch dict and returns
  anything; **objective**: ``objective(outputs, batch) -> scalar loss`` (a KD objective can hold
  a frozen teacher and compute its logits from ``batch`` inside ``__call__``).
- **train_set**: a map-style dataset indexed by ``(epoch, index)`` keys (see
  :class:`pairflow.models.pairs.EpochSampler`; augmentation seeded by the key makes batches
  reproducible and resumable); **collate** builds the batch dict from items.
- Distributed: when ``torch.distributed`` is initialised (``init_distributed`` under torchrun:
  env:// with RANK/WORLD_SIZE/LOCAL_RANK; gloo on CPU, nccl on CUDA) the model is wrapped in
  DDP, each rank reads its DistributedSampler share (``set_epoch`` per epoch) and gradient
  accumulation skips the all-reduce (``no_sync``) on all but the last micro-batch.
- AdamW (no decay on biases, norms, embeddings, scales) with linear warm-up + cosine decay
  (``transformers.get_cosine_schedule_with_warmup``);
  AMP: bf16 autocast, or fp16 autocast + GradScaler on CUDA; gradient clipping; a NaN/Inf guard
  (agreed across ranks) that skips the step and counts it in ``bad_steps``.
- ``validate(model) -> {"val_metric": higher-is-better, ...}`` after each epoch: the best
  weights are kept and loaded back at the end; ``patience`` epochs without improvement stop
  early.
- Checkpoints (rank 0 only, atomic, see ``pairflow.models.checkpoint``) every
  ``checkpoint_every`` optimizer steps and at each epoch end hold weights, best weights,
  optimizer, scheduler, scaler, counters, early-stopping state and RNG states; a run started
  with the same ``checkpoint_dir`` resumes from the latest one and ends exactly as an
  uninterrupted run with the same seed would (mid-epoch included: the sampler skips the
  samples already consumed).
- ``logger`` (rank 0 only) receives per-step loss, lr and samples/s and per-epoch validation
  metrics; ``progress(step, total)`` is called after each optimizer step on rank 0.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from transformers import get_cosine_schedule_with_warmup

from pairflow.errors import ConfigError, PairflowError
from pairflow.models.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from pairflow.models.pairs import EpochSampler, TrainDataError

log = logging.getLogger("pairflow.models.loop")

Batch = dict[str, torch.Tensor]


class Objective(Protocol):
    """Computes the training loss from the model's outputs and the batch."""

    def __call__(self, outputs: Any, batch: Batch, /) -> torch.Tensor: ...


class StepLogger(Protocol):
    """Receives metrics on rank 0 (the train stage logs them to MLflow)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


@dataclass
class LoopSettings:
    epochs: int
    batch_size: int
    learning_rate: float
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    patience: int = 2
    checkpoint_every: int = 20
    num_workers: int = 0
    prefetch_factor: int = 2
    seed: int = 0
    log_every: int = 1
    sample_weights: list[float] | None = None


@dataclass
class Timings:
    """Seconds spent per phase on this rank (rank 0's are reported)."""

    data: float = 0.0
    forward: float = 0.0
    backward: float = 0.0
    optimizer: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 4) for k, v in vars(self).items()}


@dataclass
class FitResult:
    steps: int
    epochs_run: int
    samples: int
    seconds: float
    bad_steps: int
    best_metric: float | None
    best_epoch: int | None
    stopped_early: bool
    resumed_from_step: int | None
    history: list[dict[str, float]] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    last_checkpoint: str | None = None

    @property
    def samples_per_s(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


# ---------------------------------------------------------------------------------------------
# distributed setup


def init_distributed() -> tuple[int, int, torch.device]:
    """Join the torchrun process group (env://) when WORLD_SIZE > 1; (rank, world, device).

    ``PET_*`` without ``WORLD_SIZE`` means a TrainJob pod ran the worker without torchrun:
    every node would train alone, so that is an error (pods run ``pairflow.stages.train.node``)."""
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("PET_NNODES", "1") or 1) > 1:
        raise PairflowError(
            "PET_NNODES is set but WORLD_SIZE is not: run the worker under torchrun "
            "(python -m pairflow.stages.train.node in a TrainJob), not directly"
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", init_method="env://")
    return rank, world, device


def rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _worker_init(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed + worker_id)
    np.random.seed((seed + worker_id) % 2**32)
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# optimizer and schedule


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    decay: list[nn.Parameter] = []
    rest: list[nn.Parameter] = []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim < 2 or "embedding" in name or "norm" in name or "logit_scale" in name
        (rest if plain else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total: int, warmup_fraction: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """transformers' linear warm-up over ``W = int(total * warmup_fraction)`` steps, then cosine
    decay to 0; stepped once per optimizer step.

    Started one step in (``last_epoch=0``): transformers' own step 0 runs at lr 0, a wasted step
    a short fine-tune cannot spare (the e2e classifier run, about 45 steps, fell below its gate
    with it and passes without it).
    So optimizer step ``k`` runs at ``(k + 1) / W`` of the peak during warm-up, the peak comes at
    step ``W - 1`` (the first step at fraction 0), and step ``total`` reaches 0."""
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
    scheduler: torch.optim.lr_scheduler.LambdaLR = get_cosine_schedule_with_warmup(
        optimizer,
        num_warmup_steps=int(total * warmup_fraction),
        num_training_steps=total + 1,
        last_epoch=0,
    )
    return scheduler


def _autocast(precision: str, device: torch.device) -> AbstractContextManager[Any]:
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def _all_agree(flag: bool, device: torch.device) -> bool:
    """True if ``flag`` is True on any rank."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _move(batch: Batch, device: torch.device) -> Batch:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------
# the loop


def fit(
    model: nn.Module,
    objective: Objective,
    train_set: Dataset[Any],
    collate: Callable[[list[Any]], Batch],
    *,
    settings: LoopSettings,
    checkpoint_dir: Path | None = None,
    validate: Callable[[nn.Module], dict[str, float]] | None = None,
    logger: StepLogger | None = None,
    progress: Callable[[int, int], None] | None = None,
    device: torch.device | None = None,
) -> FitResult:
    """Train ``model`` in place (see the module docstring); return what happened."""
    s = settings
    rank, world = rank_world()
    device = device or torch.device("cpu")
    if s.precision == "fp16" and device.type != "cuda":
        raise ConfigError("train.precision=fp16 needs CUDA (GradScaler); use bf16 or fp32 on CPU")
    n = len(train_set)  # type: ignore[arg-type]
    per_rank = math.ceil(n / world) if n else 0
    if per_rank < s.batch_size:
        raise TrainDataError(
            f"training set: {n} rows give {per_rank} per rank, fewer than batch_size "
            f"{s.batch_size} (x {world} ranks); lower train.batch_size or add data"
        )
    seed_everything(s.seed)
    model.to(device)
    sampler = EpochSampler(n, rank=rank, world_size=world, seed=s.seed, weights=s.sample_weights)
    loader = DataLoader(
        train_set,
        batch_size=s.batch_size,
        sampler=sampler,
        collate_fn=collate,
        drop_last=True,
        num_workers=s.num_workers,
        persistent_workers=s.num_workers > 0,
        prefetch_factor=s.prefetch_factor if s.num_workers > 0 else None,
        worker_init_fn=_worker_init,
        generator=torch.Generator().manual_seed(s.seed),
    )
    micro_per_epoch = per_rank // s.batch_size
    steps_per_epoch = max(1, micro_per_epoch // s.grad_accum)
    total_steps = steps_per_epoch * s.epochs
    ddp: nn.Module = model
    if world > 1:
        # find_unused_parameters stays False: every mode hands DDP only parameters its loss
        # uses (the classifier freezes the CLIP parts its fusion never reads, see
        # pairflow.models.heads.CLASSIFIER_UNUSED), so no mode skips a trainable parameter.
        ddp = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=False,
        )
    optim = torch.optim.AdamW(param_groups(model, s.weight_decay), lr=s.learning_rate)
    sched = warmup_cosine(optim, total_steps, s.warmup_fraction)
    scaler = torch.amp.GradScaler("cuda", enabled=s.precision == "fp16")

    st: dict[str, Any] = {
        "step": 0,
        "epoch": 0,
        "micro_done": 0,
        "bad_steps": 0,
        "samples": 0,
        "best": None,
        "best_epoch": None,
        "since_best": 0,
        "history": [],
        "stopped_early": False,
    }
    best_weights: dict[str, torch.Tensor] | None = None
    resumed: int | None = None
    if checkpoint_dir is not None and (latest := latest_checkpoint(checkpoint_dir)) is not None:
        ck = load_checkpoint(latest)
        model.load_state_dict(ck.weights)
        optim.load_state_dict(ck.state["optimizer"])
        sched.load_state_dict(ck.state["scheduler"])
        scaler.load_state_dict(ck.state["scaler"])
        st.update(ck.state["loop"])
        set_rng_state(ck.state["rng"])
        best_weights = ck.best
        resumed = ck.step
        log.info("resumed from %s (step %d, epoch %d)", latest, ck.step, st["epoch"])

    def checkpoint() -> str | None:
        if checkpoint_dir is None:
            return None
        path: str | None = None
        if rank == 0:
            state = {
                "optimizer": optim.state_dict(),
                "scheduler": sched.state_dict(),
                "scaler": scaler.state_dict(),
                "loop": dict(st),
                "rng": rng_state(),
            }
            path = str(
                save_checkpoint(checkpoint_dir, st["step"], model.state_dict(), state, best_weights)
            )
        if world > 1:
            dist.barrier()
        return path

    timings = Timings()
    last_ckpt: str | None = None
    start = time.perf_counter()
    samples_at_start = st["samples"]
    global_batch = s.batch_size * s.grad_accum * world
    while st["epoch"] < s.epochs and not st["stopped_early"]:
        epoch = st["epoch"]
        sampler.set_epoch(epoch, skip=st["micro_done"] * s.batch_size)
        model.train()
        it: Iterator[Batch] = iter(loader)
        micro_left = micro_per_epoch - st["micro_done"]
        usable = (micro_left // s.grad_accum) * s.grad_accum
        for _ in range(usable // s.grad_accum):
            t_step = time.perf_counter()
            cycle_bad = False
            loss_sum = 0.0
            for micro in range(s.grad_accum):
                t0 = time.perf_counter()
                batch = _move(next(it), device)
                t1 = time.perf_counter()
                timings.data += t1 - t0
                last = micro == s.grad_accum - 1
                sync: AbstractContextManager[Any] = (
                    nullcontext() if last or world == 1 else ddp.no_sync()  # type: ignore[operator]
                )
                with sync:
                    with _autocast(s.precision, device):
                        loss = objective(ddp(batch), batch) / s.grad_accum
                    t2 = time.perf_counter()
                    timings.forward += t2 - t1
                    bad = _all_agree(not bool(torch.isfinite(loss.detach())), device)
                    if not bad and not cycle_bad:
                        scaler.scale(loss).backward()  # type: ignore[no-untyped-call]
                        loss_sum += float(loss.detach())
                    cycle_bad = cycle_bad or bad
                    timings.backward += time.perf_counter() - t2
            t3 = time.perf_counter()
            if not cycle_bad:
                scaler.unscale_(optim)
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.max_grad_norm)
                cycle_bad = not bool(torch.isfinite(norm))
            if cycle_bad:
                st["bad_steps"] += 1
                log.warning("step %d: non-finite loss or gradient, step skipped", st["step"])
                optim.zero_grad(set_to_none=True)
                scaler.update() if scaler.is_enabled() else None
            else:
                scaler.step(optim)
                scaler.update()
                optim.zero_grad(set_to_none=True)
            sched.step()
            timings.optimizer += time.perf_counter() - t3
            st["step"] += 1
            st["micro_done"] += s.grad_accum
            st["samples"] += global_batch
            step_s = time.perf_counter() - t_step
            if rank == 0:
                if logger is not None and st["step"] % s.log_every == 0:
                    logger.log_metrics(
                        {
                            "train.step.loss": loss_sum,
                            "train.step.lr": float(sched.get_last_lr()[0]),
                            "train.step.samples_per_s": global_batch / step_s
                            if step_s > 0
                            else 0.0,
                        },
                        st["step"],
                    )
                if progress is not None:
                    progress(st["step"], total_steps)
            if st["step"] % s.checkpoint_every == 0 and st["micro_done"] < micro_per_epoch:
                last_ckpt = checkpoint() or last_ckpt
        del it
        metrics: dict[str, float] = {"epoch": float(epoch + 1)}
        if validate is not None:
            model.eval()
            metrics.update(validate(model))
            value = metrics["val_metric"]
            if st["best"] is None or value > st["best"]:
                st["best"], st["best_epoch"], st["since_best"] = value, epoch + 1, 0
                best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                st["since_best"] += 1
                if st["since_best"] >= s.patience:
                    st["stopped_early"] = True
        st["history"] = [*st["history"], metrics]
        if rank == 0 and logger is not None:
            logger.log_metrics({f"train.epoch.{k}": v for k, v in metrics.items()}, st["step"])
        log.info("epoch %d/%d: %s", epoch + 1, s.epochs, metrics)
        st["epoch"] = epoch + 1
        st["micro_done"] = 0
        last_ckpt = checkpoint() or last_ckpt
    seconds = time.perf_counter() - start
    if best_weights is not None:
        model.load_state_dict(best_weights)
    model.eval()
    return FitResult(
        steps=st["step"],
        epochs_run=st["epoch"],
        samples=st["samples"] - samples_at_start,
        seconds=seconds,
        bad_steps=st["bad_steps"],
        best_metric=st["best"],
        best_epoch=st["best_epoch"],
        stopped_early=st["stopped_early"],
        resumed_from_step=resumed,
        history=list(st["history"]),
        timings=timings,
        last_checkpoint=last_ckpt,
    )
