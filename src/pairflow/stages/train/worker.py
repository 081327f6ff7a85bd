"""One training process (a torchrun rank): read data, build the model, :func:`fit`, save.

``python -m pairflow.stages.train --config CONFIG.json --manifest M --out MODEL_DIR --base REF
[--checkpoint-dir D] [--result R.json] [--tracking-uri U --run-id ID]``

Ranks come from torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK; env:// rendezvous). Rank 0
writes the model artifact (``pairflow.models.trained``), checkpoints, the result JSON and logs
to MLflow; other ranks only train.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from pairflow.config import PairflowConfig, config_from_json
from pairflow.data.schema import read_manifest
from pairflow.errors import PairflowError
from pairflow.models import heads as models
from pairflow.models import objectives
from pairflow.models import pairs as tdata
from pairflow.models.loop import FitResult, LoopSettings, fit, init_distributed
from pairflow.models.open import open_model
from pairflow.models.trained import save_trained
from pairflow.stages.train.launch import PROGRESS_PREFIX

log = logging.getLogger("pairflow.stages.train.worker")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pairflow.stages.train")
    p.add_argument("--config", required=True, help="Resolved config JSON.")
    p.add_argument("--manifest", required=True)
    p.add_argument("--out", required=True, help="Model artifact directory (rank 0 writes).")
    p.add_argument("--base", required=True, help="Base CLIP reference.")
    p.add_argument("--checkpoint-dir", default="")
    p.add_argument("--result", default="", help="Rank 0 writes its result JSON here.")
    p.add_argument("--tracking-uri", default="")
    p.add_argument("--run-id", default="")
    return p


def loop_settings(cfg: PairflowConfig, sample_weights: list[float] | None) -> LoopSettings:
    t = cfg.train
    return LoopSettings(
        epochs=t.epochs,
        batch_size=t.batch_size,
        learning_rate=t.learning_rate,
        weight_decay=t.weight_decay,
        warmup_fraction=t.warmup_fraction,
        grad_accum=t.grad_accum,
        max_grad_norm=t.max_grad_norm,
        precision=t.precision,
        patience=t.patience,
        checkpoint_every=t.checkpoint_every,
        num_workers=t.num_workers,
        prefetch_factor=t.prefetch_factor,
        seed=cfg.run.seed,
        log_every=t.log_every,
        sample_weights=sample_weights,
    )


class _Validator:
    """Validation batches collated once, then the model's metrics on them."""

    def __init__(
        self, dataset: tdata.PairDataset, collate: tdata.Collate, kind: str, bs: int
    ) -> None:
        keys = [(0, i) for i in range(len(dataset))]
        loader: DataLoader[dict[str, torch.Tensor]] = DataLoader(
            keys,  # type: ignore[arg-type]
            batch_size=bs,
            collate_fn=lambda ks: collate([dataset[k] for k in ks]),
        )
        self.batches = list(loader)
        self.metrics = objectives.clip_metrics if kind == "clip" else objectives.classifier_metrics

    def __call__(self, model: nn.Module) -> dict[str, float]:
        return self.metrics(model, self.batches)


def _print_progress(step: int, total: int) -> None:
    print(f"{PROGRESS_PREFIX}{step}/{total}", flush=True)


def train(args: argparse.Namespace) -> FitResult | None:
    rank, world, device = init_distributed()
    cfg = config_from_json(Path(args.config).read_text())
    t = cfg.train
    if t.torch_threads > 0:
        torch.set_num_threads(t.torch_threads)
    loaded = open_model(
        args.base, variant="torch", s3=cfg.data.s3, tracking_uri=args.tracking_uri or None
    ).clip
    frame = read_manifest(args.manifest)
    splits = tdata.split_rows(frame, cfg.data.split, t.val_fraction)
    if splits.train.empty:
        raise tdata.TrainDataError(
            f"{args.manifest}: no training rows ({len(frame)} rows in, {len(splits.holdout)} "
            f"held out, {len(splits.val)} for validation)"
        )
    if splits.val.empty:
        raise tdata.TrainDataError(f"{args.manifest}: no validation rows; raise train.val_fraction")
    labels = (
        tdata.label_names([splits.train, splits.val], args.manifest)
        if t.model == "classifier"
        else None
    )
    torch.manual_seed(cfg.run.seed)
    clip = loaded.model.train()
    processor = loaded.processor
    built = models.build_trainable(
        clip,
        model=t.model,
        fusion=t.fusion,
        freeze_towers=t.freeze_towers,
        lora_rank=t.lora_rank,
        lora_alpha=t.lora_alpha,
        n_classes=len(labels or []),
    )
    tower, head = built.tower, built.head
    ip = processor.image_processor
    size = int(ip.crop_size["height"])
    train_aug = tdata.PairAugment(size, ip.image_mean, ip.image_std, t.augment)
    eval_aug = tdata.PairAugment(size, ip.image_mean, ip.image_std, None)
    seed = cfg.run.seed
    train_set = tdata.PairDataset(splits.train, train_aug, seed=seed, labels=labels, s3=cfg.data.s3)
    val_set = tdata.PairDataset(splits.val, eval_aug, seed=seed, labels=labels, s3=cfg.data.s3)
    collate = tdata.Collate(processor, loaded.max_text_length)
    weights = (
        tdata.balanced_weights(train_set.targets or [])
        if t.balance_classes and t.model == "classifier"
        else None
    )
    logger = None
    if rank == 0 and args.run_id and args.tracking_uri:
        # lazy: mlflow (slow to import); only rank 0 logs, and only with a tracking URI
        from pairflow.stages.train.mlflow_log import MlflowStepLogger

        logger = MlflowStepLogger(args.tracking_uri, args.run_id)
        logger.log_params(
            {
                "train_job.world_size": world,
                "train_job.rows_train": len(splits.train),
                "train_job.rows_val": len(splits.val),
                "train_job.base_digest": loaded.digest[:16],
            }
        )
    result = fit(
        built.module,
        built.objective,
        train_set,
        collate,
        settings=loop_settings(cfg, weights),
        checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
        validate=_Validator(val_set, collate, t.model, max(t.batch_size, 64)),
        logger=logger,
        progress=_print_progress if rank == 0 else None,
        device=device,
    )
    if logger is not None:
        logger.flush()
    if rank == 0:
        final = result.history[-1] if result.history else {}
        summary = {
            "rows_in": len(frame),
            "rows_train": len(splits.train),
            "rows_val": len(splits.val),
            "rows_holdout": len(splits.holdout),
            "world_size": world,
            "samples_per_s": round(result.samples_per_s, 2),
            **{k: v for k, v in asdict(result).items() if k != "timings"},
            "timings": result.timings.as_dict(),
            "final": final,
            "labels": labels,
        }
        save_trained(
            args.out,
            models.merged_clip(tower).cpu().train(False),
            processor,
            kind=t.model,
            labels=labels,
            head=head.cpu() if head is not None else None,
            base={"ref": args.base, "digest": loaded.digest},
            metrics={"best_val_metric": result.best_metric, **final},
            train={k: summary[k] for k in ("rows_train", "rows_val", "rows_holdout", "world_size")},
        )
        if args.result:
            Path(args.result).parent.mkdir(parents=True, exist_ok=True)
            Path(args.result).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    args = _parser().parse_args(argv)
    start = time.perf_counter()
    try:
        train(args)
    except Exception as exc:
        if isinstance(exc, PairflowError):
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return exc.exit_code
        raise
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    log.info("worker done in %.1f s", time.perf_counter() - start)
    return 0
