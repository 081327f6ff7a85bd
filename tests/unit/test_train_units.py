"""Train library units: splits, augmentation, sampler, checkpoints, heads, loop, artifact."""

from __future__ import annotations

import errno
import math
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from pairflow.config import SplitConfig
from pairflow.data.split import split_holdout
from pairflow.models import checkpoint as ck
from pairflow.models.heads import FusionHead
from pairflow.models.loop import LoopSettings, fit
from pairflow.models.pairs import (
    EpochSampler,
    PairAugment,
    TrainDataError,
    balanced_weights,
    label_names,
    mirror_caption,
    split_rows,
)


def _frame(n: int) -> pd.DataFrame:
    return pd.DataFrame(
        {"id": [f"r{i}" for i in range(n)], "caption": ["c"] * n, "label": ["a"] * n}
    )


def test_split_rows_drops_exactly_the_holdout_rows_and_disjoint_val() -> None:
    df = _frame(400)
    s = split_rows(df, SplitConfig(holdout_fraction=0.2), 0.15)
    _, held = split_holdout(df, 0.2)
    assert list(s.holdout["id"]) == list(held["id"])
    ids = [set(s.train["id"]), set(s.val["id"]), set(s.holdout["id"])]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert sum(map(len, ids)) == 400 and 20 < len(s.val) < 90


def test_label_names_requires_every_label() -> None:
    df = _frame(4)
    df.loc[2, "label"] = None
    with pytest.raises(TrainDataError, match=r"1 rows have no label.*r2"):
        label_names([df], "m.parquet")
    with pytest.raises(TrainDataError, match=r"needs a 'label' column"):
        label_names([df.drop(columns="label")], "m.parquet")


def test_mirror_caption_swaps_sides() -> None:
    assert (
        mirror_caption("a red circle on the left, Right of x")
        == "a red circle on the right, Left of x"
    )


def _image() -> Image.Image:
    arr = torch.zeros(32, 32, 3, dtype=torch.uint8)
    arr[:, :8] = 255  # white stripe on the left
    return Image.fromarray(arr.numpy())


def test_flip_swaps_caption_and_pixels_and_is_seeded() -> None:
    from pairflow.stages.train.settings import AugmentConfig

    aug = PairAugment(
        32,
        [0, 0, 0],
        [1, 1, 1],
        AugmentConfig(crop_scale=(1, 1), hflip=1.0, brightness=0, contrast=0),
    )
    pixels, caption = aug(_image(), "a stripe on the left", seed=1)
    assert caption == "a stripe on the right"
    assert pixels[:, :, -4:].mean() > 0.9 and pixels[:, :, :4].mean() < 0.1
    jitter = PairAugment(32, [0, 0, 0], [1, 1, 1], AugmentConfig())
    a = jitter(_image(), "x", seed=5)[0]
    assert torch.equal(a, jitter(_image(), "x", seed=5)[0])
    assert not torch.equal(a, jitter(_image(), "x", seed=6)[0])


def test_hue_jitter_skipped_when_caption_names_a_colour() -> None:
    from pairflow.stages.train.settings import AugmentConfig

    cfg = AugmentConfig(crop_scale=(1, 1), hflip=0, brightness=0, contrast=0, hue=0.5)
    aug = PairAugment(32, [0, 0, 0], [1, 1, 1], cfg)
    img = Image.new("RGB", (32, 32), (200, 30, 30))
    plain = PairAugment(32, [0, 0, 0], [1, 1, 1], None)(img, "x", 0)[0]
    assert torch.allclose(aug(img, "a red square", seed=3)[0], plain)
    assert not torch.allclose(aug(img, "a square", seed=3)[0], plain)


def test_epoch_sampler_partitions_and_skips() -> None:
    samplers = [EpochSampler(10, rank=r, world_size=2, seed=0) for r in range(2)]
    for s in samplers:
        s.set_epoch(1)
    keys = [list(s) for s in samplers]
    assert sorted(i for k in keys for _, i in k) == list(range(10))
    assert all(e == 1 for k in keys for e, _ in k)
    samplers[0].set_epoch(1, skip=2)
    assert list(samplers[0]) == keys[0][2:] and len(samplers[0]) == 3


def test_balanced_sampler_evens_out_classes() -> None:
    targets = [0] * 90 + [1] * 10
    s = EpochSampler(100, rank=0, world_size=1, seed=0, weights=balanced_weights(targets))
    drawn = [targets[i] for _ in range(5) for _, i in s]
    assert 0.35 < sum(drawn) / len(drawn) < 0.65


def test_checkpoint_disk_full_keeps_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    w1 = {"w": torch.arange(4.0)}
    ck.save_checkpoint(tmp_path, 1, w1, {"loop": {"step": 1}, "rng": ck.rng_state()})

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(
        ck.CheckpointError, match=r"step 2.*No space left.*previous checkpoint is intact"
    ):
        ck.save_checkpoint(tmp_path, 2, {"w": torch.zeros(4)}, {"loop": {"step": 2}})
    latest = ck.latest_checkpoint(tmp_path)
    assert latest is not None and latest.name == "step-00000001"
    loaded = ck.load_checkpoint(latest)
    assert torch.equal(loaded.weights["w"], w1["w"]) and loaded.state["loop"]["step"] == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


def test_checkpoint_rng_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(3)
    ck.save_checkpoint(tmp_path, 5, {"w": torch.ones(1)}, {"rng": ck.rng_state()})
    expected = torch.rand(3)
    torch.manual_seed(99)
    ck.set_rng_state(ck.load_checkpoint(tmp_path / "step-00000005").state["rng"])
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("kind", ["concat", "gated", "late", "cross_attention"])
def test_fusion_heads_shape(kind: str) -> None:
    torch.manual_seed(0)
    head = FusionHead(kind, 16, 24, 20, 3)
    feats = {
        "image": torch.randn(2, 16),
        "text": torch.randn(2, 16),
        "patches": torch.randn(2, 5, 20),
        "tokens": torch.randn(2, 7, 24),
        "mask": torch.ones(2, 7, dtype=torch.long),
    }
    out = head(feats)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    if kind == "cross_attention":  # attends over the patch sequence, not a pooled vector
        feats["patches"] = feats["patches"].clone()
        feats["patches"][:, 3] += 5.0
        assert not torch.allclose(head(feats), out)


class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 2)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        out: torch.Tensor = self.lin(batch["x"])
        return out


class _ToySet(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, n: int) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 2, generator=g)
        self.y = (self.x[:, 0] > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, torch.Tensor]:
        return {"x": self.x[key[1]], "label": self.y[key[1]]}


def _collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([it[k] for it in items]) for k in items[0]}


def test_fit_nan_guard_skips_and_counts_bad_steps() -> None:
    calls = {"n": 0}

    def objective(out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        calls["n"] += 1
        loss = nn.functional.cross_entropy(out, batch["label"])
        return loss * float("nan") if calls["n"] == 2 else loss

    model = _Toy()
    res = fit(
        model,
        objective,
        _ToySet(64),
        _collate,
        settings=LoopSettings(epochs=2, batch_size=8, learning_rate=0.1),
    )
    assert res.bad_steps == 1 and res.steps == 16
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_fit_early_stopping_restores_best() -> None:
    scores = iter([0.5, 0.9, 0.4, 0.3, 0.2])
    seen: list[dict[str, torch.Tensor]] = []

    def validate(model: nn.Module) -> dict[str, float]:
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"val_metric": next(scores)}

    model = _Toy()
    obj = lambda out, b: nn.functional.cross_entropy(out, b["label"])  # noqa: E731
    res = fit(
        model,
        obj,
        _ToySet(32),
        _collate,
        settings=LoopSettings(epochs=5, batch_size=8, learning_rate=0.1, patience=2),
        validate=validate,
    )
    assert res.stopped_early and res.epochs_run == 4 and res.best_epoch == 2
    assert torch.equal(model.lin.weight, seen[1]["lin.weight"])


def test_fit_batch_larger_than_dataset() -> None:
    obj = lambda out, b: out.sum()  # noqa: E731
    with pytest.raises(TrainDataError, match=r"10 rows.*fewer than batch_size 16"):
        fit(
            _Toy(),
            obj,
            _ToySet(10),
            _collate,
            settings=LoopSettings(epochs=1, batch_size=16, learning_rate=0.1),
        )


def test_warmup_cosine_schedule() -> None:
    from pairflow.models.loop import warmup_cosine

    def lrs(total: int, warmup_fraction: float) -> list[float]:
        """The learning rate of each optimizer step 0..total (peak 1)."""
        optim = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
        sched = warmup_cosine(optim, total, warmup_fraction)
        seen = []
        for _ in range(total + 1):
            seen.append(float(sched.get_last_lr()[0]))
            optim.step()
            sched.step()
        return seen

    f = lrs(100, 0.1)  # 10 warm-up steps: the first step already trains, the peak at step 9
    assert f[0] == pytest.approx(0.1) and f[4] == pytest.approx(0.5) and f[9] == pytest.approx(1.0)
    assert all(a < b for a, b in pairwise(f[:10]))
    # cosine over the 91 steps after the warm-up's 10 (transformers' schedule, one step in)
    assert f[55] == pytest.approx(0.5 * (1 + math.cos(math.pi * 46 / 91)))
    assert f[100] == pytest.approx(0.0) and 0 < f[99] < 1e-3
    assert all(a > b for a, b in pairwise(f[9:]))  # cosine down to 0
    g = lrs(100, 0.0)  # no warm-up: the first step runs at the peak
    assert g[0] == pytest.approx(1.0, abs=1e-3) and g[100] == pytest.approx(0)
    assert g[50] == pytest.approx(0.5 * (1 + math.cos(math.pi * 51 / 101)))
