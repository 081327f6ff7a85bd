"""One torchrun rank of the DDP training-mode matrix (``test_train_ddp_modes.py``).

``torchrun --nproc-per-node 2 ddp_modes_worker.py --manifest M --base CLIP_DIR --combos J --out D``

For each combination in the JSON list ``J`` (``model``, ``fusion``, ``freeze_towers``,
``lora_rank``, ``precision``, ``grad_accum``) every rank builds the mode with the code the
train worker uses (:func:`pairflow.models.heads.build_trainable`) and trains it with
:func:`pairflow.models.loop.fit` under DDP, then:

1. records rank 0's per-step losses and the loss on the whole training set before and after;
2. gathers every rank's parameters and records the largest difference to rank 0's;
3. starts a fresh model on the same checkpoint folder: it must resume at the last step without
   training further, holding exactly the trained weights on every rank;
4. runs one more epoch from that checkpoint (the run goes on from where it stopped).

Rank 0 appends one JSON line per combination to ``D/results.jsonl`` as soon as it is done.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pairflow.data.schema import read_manifest
from pairflow.models import heads as models
from pairflow.models import objectives
from pairflow.models import pairs as tdata
from pairflow.models.clip import load_clip
from pairflow.models.loop import FitResult, LoopSettings, fit, init_distributed

EPOCHS = 3


class _Losses:
    """Rank 0's step logger: keeps ``train.step.loss``."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if "train.step.loss" in metrics:
            self.values.append(metrics["train.step.loss"])


class _Cached(torch.utils.data.Dataset[dict[str, Any]]):
    """Items without augmentation do not change between epochs: decode each row once."""

    def __init__(self, inner: tdata.PairDataset) -> None:
        self.inner = inner
        self.items: dict[int, dict[str, Any]] = {}

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index = key[1]
        if index not in self.items:
            self.items[index] = self.inner[(0, index)]
        return self.items[index]


def _flat(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().double().flatten() for p in module.state_dict().values()])


def _max_rank_diff(module: nn.Module) -> float:
    """Largest |parameter - rank 0's| over every rank (0.0 when all ranks hold the same)."""
    mine = _flat(module)
    gathered = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, mine)
    return max(float((g - gathered[0]).abs().max()) for g in gathered)


def _set_loss(built: models.Trainable, batch: dict[str, torch.Tensor], model: str) -> float:
    """The objective's loss on the whole training set (one fp32 batch, no autocast)."""
    metrics = objectives.clip_metrics if model == "clip" else objectives.classifier_metrics
    built.module.eval()
    loss = metrics(built.module, [batch])["val_loss"]
    built.module.train()
    return loss


def _max_over_ranks(value: float) -> float:
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _run(
    combo: dict[str, Any],
    pristine: nn.Module,
    train_set: _Cached,
    collate: tdata.Collate,
    n_classes: int,
    whole: dict[str, torch.Tensor],
    ckpt: Path,
    epochs: int,
    logger: _Losses | None,
) -> tuple[models.Trainable, FitResult, torch.Tensor, float]:
    torch.manual_seed(7)
    built = models.build_trainable(
        copy.deepcopy(pristine),  # type: ignore[arg-type]
        model=combo["model"],
        fusion=combo["fusion"],
        freeze_towers=combo["freeze_towers"],
        lora_rank=combo["lora_rank"],
        n_classes=n_classes,
    )
    initial = _flat(built.module)
    before = _set_loss(built, whole, combo["model"])
    settings = LoopSettings(
        epochs=epochs,
        batch_size=4,
        learning_rate=5e-4,  # train.learning_rate default
        warmup_fraction=0.0,
        grad_accum=combo["grad_accum"],
        precision=combo["precision"],
        patience=99,
        checkpoint_every=10_000,
        num_workers=0,
        seed=3,
    )
    result = fit(
        built.module,
        built.objective,
        train_set,
        collate,
        settings=settings,
        checkpoint_dir=ckpt,
        logger=logger,
    )
    return built, result, initial, before


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--manifest", required=True)
    p.add_argument("--base", required=True)
    p.add_argument("--combos", required=True)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    torch.set_num_threads(1)
    rank, world, _ = init_distributed()
    out = Path(args.out)
    loaded = load_clip(args.base, device="cpu")
    pristine = loaded.model.train()
    frame = read_manifest(args.manifest)
    labels = tdata.label_names([frame], args.manifest)
    ip = loaded.processor.image_processor
    aug = tdata.PairAugment(int(ip.crop_size["height"]), ip.image_mean, ip.image_std, None)
    train_set = _Cached(tdata.PairDataset(frame, aug, seed=0, labels=labels))
    collate = tdata.Collate(loaded.processor, loaded.max_text_length)
    whole = collate([train_set[(0, i)] for i in range(len(train_set))])
    for i, combo in enumerate(json.loads(Path(args.combos).read_text())):
        print(f"rank {rank}: combination {combo}", flush=True)
        ckpt = out / f"ckpt-{i}"
        losses = _Losses() if rank == 0 else None
        built, first, start, before = _run(
            combo, pristine, train_set, collate, len(labels), whole, ckpt, EPOCHS, losses
        )
        after = _set_loss(built, whole, combo["model"])
        trained = _flat(built.module)
        rank_diff = _max_rank_diff(built.module)
        resumed_mod, resumed, _, _ = _run(
            combo, pristine, train_set, collate, len(labels), whole, ckpt, EPOCHS, None
        )
        resume_diff = _max_over_ranks(float((_flat(resumed_mod.module) - trained).abs().max()))
        more = _Losses() if rank == 0 else None
        _, extended, _, _ = _run(
            combo, pristine, train_set, collate, len(labels), whole, ckpt, EPOCHS + 1, more
        )
        if rank == 0:
            assert losses is not None and more is not None
            record = {
                **combo,
                "world_size": world,
                "losses": losses.values,
                "set_loss_before": before,
                "set_loss_after": after,
                "steps": first.steps,
                "epochs": first.epochs_run,
                "bad_steps": first.bad_steps,
                "trainable": sum(p.numel() for p in built.module.parameters() if p.requires_grad),
                "changed": float((trained - start).abs().max()),
                "rank_max_diff": rank_diff,
                "resumed_from_step": resumed.resumed_from_step,
                "resumed_steps": resumed.steps,
                "resume_max_diff": resume_diff,
                "extended_resumed_from": extended.resumed_from_step,
                "extended_steps": extended.steps,
                "extended_losses": more.values,
            }
            with (out / "results.jsonl").open("a") as fh:
                fh.write(json.dumps(record) + "\n")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
