"""A near-duplicate dev set of real photographs, built offline from shipped sample photos.

Sources: the photographs that scikit-image (``skimage/data``), scikit-learn
(``load_sample_images``) and matplotlib (``sample_data/grace_hopper.jpg``) install with
their wheels -- nothing is downloaded. Each photo is cut into non-overlapping tiles (distinct
images: tiles of one photo share lighting, colour and texture, so they are hard negatives,
as are the texture photos brick/grass/gravel and the dark Hubble field), and each tile is
rescaled to a photo size (long side 320-768 px) and saved as a JPEG or PNG original.

Every original gets the near-duplicate variants users meet, each drawn with its own random
strength: ``resize`` (0.45-0.7x), ``jpeg`` (re-encoded at quality 20-35), ``crop`` (3-7 %
off one or two sides), ``brightness`` (brightness and contrast changed together),
``overlay`` (a caption box with text in a corner), ``format`` (JPEG <-> PNG/WebP) and
``upscale`` (1.4-2x). None of this follows the synthetic generator's renders.

Ground truth: ``group`` names the original; every pair of files in one group is a near
duplicate, every pair across groups is not.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw, ImageEnhance

__all__ = ["VARIANTS", "PhotoSet", "build_photoset", "source_photos"]

VARIANTS: tuple[str, ...] = (
    "resize",
    "jpeg",
    "crop",
    "brightness",
    "overlay",
    "format",
    "upscale",
)

# (module attribute in skimage.data, tiles down, tiles across)
_SKIMAGE: tuple[tuple[str, int, int], ...] = (
    ("astronaut", 2, 2),
    ("brick", 2, 2),
    ("camera", 2, 2),
    ("cell", 1, 1),  # a near-blank field: its tiles would be indistinguishable
    ("chelsea", 1, 2),
    ("coffee", 2, 3),
    ("coins", 1, 1),
    ("grass", 2, 2),
    ("gravel", 2, 2),
    ("hubble_deep_field", 2, 2),
    ("immunohistochemistry", 2, 2),
    ("moon", 2, 2),
    ("page", 1, 1),
    ("retina", 3, 3),
    ("rocket", 2, 3),
    ("text", 1, 1),
    ("clock", 1, 1),
    ("stereo_motorcycle", 2, 3),
)


def _skimage_photos() -> Iterator[tuple[str, np.ndarray, int, int]]:
    import skimage.data

    for name, down, across in _SKIMAGE:
        arr = getattr(skimage.data, name)()
        if isinstance(arr, tuple):  # stereo_motorcycle: (left, right, disparity)
            arr = arr[0]
        yield name, np.asarray(arr), down, across


def _other_photos() -> Iterator[tuple[str, np.ndarray, int, int]]:
    import matplotlib
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    for path, arr in zip(sample.filenames, sample.images, strict=True):
        yield Path(path).stem, np.asarray(arr), 2, 3
    hopper = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    with Image.open(hopper) as img:
        yield "grace_hopper", np.asarray(img.convert("RGB")), 2, 2


def source_photos() -> list[tuple[str, Image.Image]]:
    """The distinct base photographs: ``(name, image)``, tiles of the shipped photos."""
    out: list[tuple[str, Image.Image]] = []
    for name, arr, down, across in (*_skimage_photos(), *_other_photos()):
        h, w = arr.shape[:2]
        th, tw = h // down, w // across
        for r in range(down):
            for c in range(across):
                tile = arr[r * th : (r + 1) * th, c * tw : (c + 1) * tw]
                mode = "L" if tile.ndim == 2 else "RGB"
                out.append((f"{name}_{r}{c}", Image.fromarray(np.ascontiguousarray(tile), mode)))
    return out


def _encode(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.save(buf, "JPEG", quality=quality)
    elif fmt == "WEBP":
        img.save(buf, "WEBP", quality=quality)
    else:
        img.save(buf, "PNG")
    return buf.getvalue()


def _scaled(img: Image.Image, factor: float) -> Image.Image:
    w, h = img.size
    size = (max(8, round(w * factor)), max(8, round(h * factor)))
    return img.resize(size, Image.Resampling.LANCZOS)


def _crop(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    box = [0, 0, w, h]
    for side in rng.choice(4, size=int(rng.integers(1, 3)), replace=False).tolist():
        cut = float(rng.uniform(0.03, 0.07))
        if side == 0:
            box[0] = round(w * cut)
        elif side == 1:
            box[1] = round(h * cut)
        elif side == 2:
            box[2] = w - round(w * cut)
        else:
            box[3] = h - round(h * cut)
    return img.crop((box[0], box[1], box[2], box[3]))


def _brightness(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    factor = float(rng.choice([rng.uniform(0.7, 0.85), rng.uniform(1.15, 1.3)]))
    out = ImageEnhance.Brightness(img).enhance(factor)
    return ImageEnhance.Contrast(out).enhance(float(rng.uniform(0.8, 1.25)))


def _overlay(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    out = img.convert("RGB")
    w, h = out.size
    bw, bh = round(w * rng.uniform(0.14, 0.22)), round(h * rng.uniform(0.06, 0.1))
    corner = int(rng.integers(4))
    x = 4 if corner in (0, 2) else w - bw - 4
    y = 4 if corner in (0, 1) else h - bh - 4
    layer = Image.new("RGBA", out.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    fill = tuple(int(v) for v in rng.integers(0, 256, 3))
    draw.rectangle((x, y, x + bw, y + bh), fill=(*fill, 200))
    draw.text((x + 3, y + 2), "(c) photo", fill=(255, 255, 255, 255))
    return Image.alpha_composite(out.convert("RGBA"), layer).convert("RGB")


def _variant(kind: str, img: Image.Image, fmt: str, rng: np.random.Generator) -> tuple[bytes, str]:
    """(file bytes, extension) of one variant of the original ``img`` (saved as ``fmt``)."""
    makers: dict[str, Callable[[], tuple[bytes, str]]] = {
        "resize": lambda: (_encode(_scaled(img, rng.uniform(0.45, 0.7)), "JPEG", 85), "jpg"),
        "jpeg": lambda: (_encode(img, "JPEG", int(rng.integers(20, 36))), "jpg"),
        "crop": lambda: (_encode(_crop(img, rng), "JPEG", 90), "jpg"),
        "brightness": lambda: (_encode(_brightness(img, rng), "JPEG", 90), "jpg"),
        "overlay": lambda: (_encode(_overlay(img, rng), "JPEG", 90), "jpg"),
        "format": lambda: (
            (_encode(img, "PNG"), "png") if fmt == "JPEG" else (_encode(img, "WEBP", 90), "webp")
        ),
        "upscale": lambda: (_encode(_scaled(img, rng.uniform(1.4, 2.0)), "JPEG", 90), "jpg"),
    }
    return makers[kind]()


@dataclass(frozen=True)
class PhotoSet:
    """Files written under ``root`` and their ground truth (``id``, ``image``, ``group``,
    ``variant``, ``caption``) -- also written as ``root/manifest.jsonl``."""

    root: Path
    frame: pd.DataFrame

    def true_pairs(self) -> set[tuple[str, str]]:
        """Every unordered ``(id, id)`` pair (sorted) within one group."""
        pairs: set[tuple[str, str]] = set()
        for _, ids in self.frame.groupby("group")["id"]:
            members = sorted(ids)
            pairs.update((a, b) for i, a in enumerate(members) for b in members[i + 1 :])
        return pairs


def build_photoset(root: Path, *, seed: int = 0, limit: int | None = None) -> PhotoSet:
    """Write the dev set under ``root`` (originals + every variant) and return it.

    ``limit`` keeps the first ``limit`` base photos (a smaller set for quick runs).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, str]] = []
    bases = source_photos()
    if limit is not None:
        bases = bases[:limit]
    for k, (name, tile) in enumerate(bases):
        long_side = int(rng.integers(320, 769))
        img = _scaled(tile, long_side / max(tile.size))
        fmt = "JPEG" if k % 2 == 0 else "PNG"
        files = [("original", *(_encode(img, fmt, 92), "jpg" if fmt == "JPEG" else "png"))]
        for kind in VARIANTS:
            files.append((kind, *_variant(kind, img, fmt, rng)))
        for kind, data, ext in files:
            rel = f"{name}/{kind}.{ext}"
            (root / name).mkdir(exist_ok=True)
            (root / rel).write_bytes(data)
            rows.append(
                {
                    "id": f"{name}-{kind}",
                    "image": rel,
                    "group": name,
                    "variant": kind,
                    "caption": f"photo {name} ({kind})",
                }
            )
    frame = pd.DataFrame(rows)
    frame.to_json(root / "manifest.jsonl", orient="records", lines=True)
    return PhotoSet(root=root, frame=frame)


if __name__ == "__main__":  # pragma: no cover - manual inspection
    import sys

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "photoset")
    built = build_photoset(target)
    print(f"{len(built.frame)} files, {built.frame['group'].nunique()} groups -> {target}")
    print(f"bytes: {sum(os.path.getsize(target / p) for p in built.frame['image'])}")
