"""Training data: splits, image-caption datasets with caption-consistent augmentation, batches.

- :func:`split_rows` drops the held-out rows (``pairflow.data.split``, same rows evaluate uses)
  and takes a validation split from the rest by the same id hash with another salt.
- :class:`PairDataset` items are keyed by ``(epoch, index)`` (see :class:`EpochSampler`):
  workers read the image (local path, ``s3://`` or tar member), decode it, and augment it with
  an RNG seeded by ``(seed, epoch, index)``, so a batch is the same whichever worker made it
  and a resumed run sees exactly the batches an uninterrupted run would.
- Augmentation (torchvision transforms v2): random resized crop, horizontal flip that swaps
  ``left``/``right`` in the caption, colour jitter whose hue part is skipped when the caption
  names a colour.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch.utils.data import Dataset, DistributedSampler, Sampler

from pairflow.config import AugmentConfig, S3Config, SplitConfig
from pairflow.data import imageio
from pairflow.data.decode import decode_image
from pairflow.data.split import split_frame, split_holdout
from pairflow.errors import InputDataError

if TYPE_CHECKING:
    from transformers import CLIPProcessor

VAL_SALT = "pairflow-val-v1"
_SIDE_WORD = re.compile(r"\b(left|right)\b", re.IGNORECASE)
# Basic colour terms (hue jitter would falsify a caption that names one); the demo's palette
# (pairflow.demo.synthetic.COLOURS) is a subset, checked by a test.
COLOUR_WORDS: tuple[str, ...] = (
    "red", "green", "blue", "yellow", "purple", "orange", "pink", "brown", "black", "white",
    "grey", "gray", "cyan", "magenta", "violet", "teal", "turquoise", "gold", "silver",
)  # fmt: skip
_COLOUR_WORD = re.compile(r"\b(" + "|".join(COLOUR_WORDS) + r")\b", re.IGNORECASE)
Key = tuple[int, int]


class TrainDataError(InputDataError):
    """Training data that cannot be trained on (empty, unlabelled, smaller than a batch)."""


@dataclass(frozen=True)
class Splits:
    train: pd.DataFrame
    val: pd.DataFrame
    holdout: pd.DataFrame


def split_rows(frame: pd.DataFrame, split: SplitConfig, val_fraction: float) -> Splits:
    """(train, val, held-out) rows under ``data.split``; held-out rows never reach training."""
    pool, held = split_frame(frame, split)
    train, val = split_holdout(pool, val_fraction, salt=VAL_SALT)
    return Splits(train, val, held)


def label_names(frames: Sequence[pd.DataFrame], origin: str) -> list[str]:
    """Sorted label set; an error naming ``origin`` when a row has no label."""
    frame = pd.concat(frames, ignore_index=True)
    if "label" not in frame.columns:
        raise TrainDataError(f"{origin}: train.model=classifier needs a 'label' column")
    missing = frame["label"].isna() | (frame["label"].astype(str).str.strip() == "")
    if missing.any():
        ids = ", ".join(str(i) for i in frame.loc[missing, "id"].head(3))
        raise TrainDataError(
            f"{origin}: {int(missing.sum())} rows have no label (e.g. {ids}); "
            "train.model=classifier needs a label on every row"
        )
    names = sorted({str(v) for v in frame["label"]})
    if len(names) < 2:
        raise TrainDataError(
            f"{origin}: train.model=classifier needs at least 2 distinct labels, got {names}"
        )
    return names


def mirror_caption(caption: str) -> str:
    """The caption of the horizontally flipped image (``left`` <-> ``right``, case kept)."""

    def swap(m: re.Match[str]) -> str:
        word = "right" if m.group(1).lower() == "left" else "left"
        return word.capitalize() if m.group(1)[0].isupper() else word

    return _SIDE_WORD.sub(swap, caption)


def names_colour(caption: str) -> bool:
    return _COLOUR_WORD.search(caption) is not None


def item_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed fixed by (seed, epoch, index)."""
    digest = hashlib.sha256(f"{seed}:{epoch}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


class PairAugment:
    """Caption-consistent augmentation of a PIL image; returns (pixels, caption)."""

    def __init__(
        self,
        size: int,
        mean: Sequence[float],
        std: Sequence[float],
        cfg: AugmentConfig | None,
    ) -> None:
        # lazy: torchvision (slow to import); only this path needs it
        from torchvision.transforms import v2

        self.cfg = cfg
        self.flip = v2.RandomHorizontalFlip(p=1.0)
        scale = cfg.crop_scale if cfg is not None else (1.0, 1.0)
        if cfg is None or scale == (1.0, 1.0):
            self.geometry: Any = v2.Compose([v2.Resize(size), v2.CenterCrop(size)])
        else:
            self.geometry = v2.RandomResizedCrop(size, scale=scale, antialias=True)
        jitter = dict(
            brightness=cfg.brightness if cfg else 0.0,
            contrast=cfg.contrast if cfg else 0.0,
            saturation=cfg.saturation if cfg else 0.0,
        )
        self.jitter = v2.ColorJitter(**jitter) if any(jitter.values()) else None
        self.hue = v2.ColorJitter(hue=cfg.hue) if cfg is not None and cfg.hue > 0 else None
        self.finish = v2.Compose(
            [
                v2.ToImage(),
                v2.ToDtype(torch.float32, scale=True),
                v2.Normalize(list(mean), list(std)),
            ]
        )

    def __call__(self, image: Any, caption: str, seed: int) -> tuple[torch.Tensor, str]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            image = self.geometry(image)
            if self.cfg is not None:
                if float(torch.rand(())) < self.cfg.hflip:
                    image = self.flip(image)
                    caption = mirror_caption(caption)
                if self.jitter is not None:
                    image = self.jitter(image)
                if self.hue is not None and not names_colour(caption):
                    image = self.hue(image)
            pixels: torch.Tensor = self.finish(image)
        return pixels, caption


class PairDataset(Dataset[dict[str, Any]]):
    """Rows of a manifest as augmented (pixels, caption[, label index]) items."""

    def __init__(
        self,
        frame: pd.DataFrame,
        augment: PairAugment,
        *,
        seed: int,
        labels: Sequence[str] | None = None,
        s3: S3Config | None = None,
    ) -> None:
        self.images = [str(v) for v in frame["image"]]
        self.captions = [str(v) for v in frame["caption"]]
        index = {name: i for i, name in enumerate(labels or [])}
        self.targets = [index[str(v)] for v in frame["label"]] if labels is not None else None
        self.augment = augment
        self.seed = seed
        self.s3 = s3

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: Key) -> dict[str, Any]:
        epoch, index = key
        uri = self.images[index]
        try:
            image = decode_image(imageio.read_image_bytes(uri, self.s3)).image
        except Exception as exc:
            raise InputDataError(f"{uri}: cannot read training image ({exc})") from exc
        pixels, caption = self.augment(
            image, self.captions[index], item_seed(self.seed, epoch, index)
        )
        item: dict[str, Any] = {"pixel_values": pixels, "caption": caption, "index": index}
        if self.targets is not None:
            item["label"] = self.targets[index]
        return item


class Collate:
    """Stack pixels, tokenize captions with the model's tokenizer (picklable for workers)."""

    def __init__(self, processor: CLIPProcessor, max_length: int) -> None:
        self.tokenizer = processor.tokenizer
        self.max_length = max_length

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        enc = self.tokenizer(
            [it["caption"] for it in items],
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        batch = {
            "pixel_values": torch.stack([it["pixel_values"] for it in items]),
            "input_ids": enc["input_ids"],
            "attention_mask": enc["attention_mask"],
            "index": torch.tensor([it["index"] for it in items]),
        }
        if "label" in items[0]:
            batch["label"] = torch.tensor([it["label"] for it in items])
        return batch


class EpochSampler(Sampler[Key]):
    """This rank's ``(epoch, index)`` keys: a DistributedSampler order (or, with ``weights``, a
    class-balanced draw with replacement), skipping the first ``skip`` keys after a resume."""

    def __init__(
        self,
        n: int,
        *,
        rank: int,
        world_size: int,
        seed: int,
        shuffle: bool = True,
        weights: Sequence[float] | None = None,
    ) -> None:

        self.n = n
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.weights = torch.tensor(weights, dtype=torch.double) if weights is not None else None
        self.inner: DistributedSampler[int] = DistributedSampler(
            range(n),  # type: ignore[arg-type]
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
        )
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch = epoch
        self.skip = skip
        self.inner.set_epoch(epoch)

    def _order(self) -> list[int]:
        if self.weights is None:
            return list(self.inner)
        per_rank = math.ceil(self.n / self.world_size)
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        draw = torch.multinomial(self.weights, per_rank * self.world_size, True, generator=g)
        return draw[self.rank :: self.world_size].tolist()

    def __iter__(self) -> Iterator[Key]:
        for index in self._order()[self.skip :]:
            yield self.epoch, index

    def __len__(self) -> int:
        return math.ceil(self.n / self.world_size) - self.skip


def balanced_weights(targets: Sequence[int]) -> list[float]:
    """Per-row weight 1 / (rows of its class)."""
    counts: dict[int, int] = {}
    for t in targets:
        counts[t] = counts.get(t, 0) + 1
    return [1.0 / counts[t] for t in targets]
