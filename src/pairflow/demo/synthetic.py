"""Deterministic synthetic image-caption dataset (coloured shapes) with labelled defects.

Every clean caption truly describes its image ("two small red circles in the top left").
With ``defects=True`` a share of the rows carries one known defect each; ``ground_truth.parquet``
lists them, so validate/dedupe/filter stages can be scored against what was injected.
"""

from __future__ import annotations

import io
import math
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from pairflow.data.schema import MANIFEST_SCHEMA
from pairflow.errors import ConfigError

DEFECT_KINDS: tuple[str, ...] = (
    "corrupt_file",
    "zero_byte_file",
    "not_an_image",
    "missing_file",
    "empty_caption",
    "garbage_caption",
    "exact_duplicate",
    "near_duplicate",
    "duplicate_caption",
    "mismatched_caption",
)
LABELS: tuple[str, ...] = ("circle", "square", "triangle", "star")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "purple", "orange")
COLOUR_RGB: Mapping[str, tuple[int, int, int]] = {
    "red": (215, 40, 40),
    "green": (35, 160, 60),
    "blue": (40, 75, 220),
    "yellow": (240, 210, 30),
    "purple": (135, 55, 185),
    "orange": (245, 135, 25),
    # the shifted source's palette (``generate_dataset(shift=True)``), disjoint from COLOURS
    "pink": (250, 150, 200),
    "teal": (0, 128, 128),
    "brown": (120, 70, 30),
    "cyan": (70, 220, 235),
}
SHIFT_COLOURS: tuple[str, ...] = ("pink", "teal", "brown", "cyan")
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right", "center")
SIZES: tuple[str, ...] = ("small", "large")
SOURCES: tuple[str, ...] = ("synthetic-a", "synthetic-b")

MANIFEST_FILE = "manifest.parquet"
GROUND_TRUTH_FILE = "ground_truth.parquet"
IMAGES_DIR = "images"

GROUND_TRUTH_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("kind", pa.string()),
        ("duplicate_of", pa.string()),
        ("detail", pa.string()),
    ]
)

_COUNT_WORDS: Mapping[int, str] = {1: "a", 2: "two", 3: "three"}
_TEMPLATES: tuple[str, ...] = (
    "{obj} in the {pos}",
    "a photo of {obj} in the {pos}",
    "there {be} {obj} in the {pos}",
    "an image showing {obj} in the {pos}",
    "{obj} in the {pos} of the picture",
)
_DUPLICATE_KINDS = frozenset({"exact_duplicate", "near_duplicate", "duplicate_caption"})
_EXTENSIONS: Mapping[str, str] = {"png": ".png", "jpeg": ".jpg"}
_SIZE_FRACTION: Mapping[str, float] = {"small": 0.16, "large": 0.24}
_MARGIN_FRACTION = 0.0075
_SUPERSAMPLE = 4
_JPEG_QUALITY = 90
_SHADING_OCTAVES: tuple[tuple[int, float], ...] = ((3, 50.0), (6, 25.0), (12, 12.5))
_MIN_IMAGE_SIZE = 32
_BLANK_CAPTIONS: tuple[str, ...] = ("", " ", "   ", "\t", " \n ")
_GARBAGE_PIECES: tuple[str, ...] = (
    "\x00",
    "\x07",
    "\x1b",
    "\x7f",
    "Ã",
    "ƒ",
    "Â",
    "…",
    "###",
    "@@",
    "%%",
    "\ufffd",
    "Ã©",
    "â€™",
    "~~",
    "^^",
    "||",
    "*&",
    "Ð",
    "¤",
    "ï»¿",
    "<<>>",
    "$$",
)
_NOT_IMAGES: tuple[tuple[str, str], ...] = (
    (
        "html page",
        "<!DOCTYPE html>\n<html><head><title>404 Not Found</title></head>"
        "<body><h1>Not Found</h1><p>The requested URL was not found on this server.</p>"
        "</body></html>\n",
    ),
    ("plain text", "This file has moved. Please contact the site administrator.\n"),
    ("json error", '{"error": "AccessDenied", "message": "Access Denied"}\n'),
)


@dataclass(frozen=True)
class GenerateSummary:
    """What :func:`generate_dataset` wrote."""

    out_dir: Path
    rows: int
    defects: dict[str, int]
    manifest: Path
    ground_truth: Path


@dataclass(frozen=True)
class _Scene:
    shape: str
    colour: str
    count: int
    position: str
    size: str


@dataclass(frozen=True)
class _RowDraw:
    scene: _Scene
    template: int
    fmt: str
    source: str


_Variant = tuple[bytes, str, str]


@dataclass(frozen=True)
class _Artefact:
    scene: _Scene
    caption: str
    fmt: str
    data: bytes | None
    detail: str = ""


def _pick(rng: np.random.Generator, options: tuple[str, ...]) -> str:
    return options[int(rng.integers(len(options)))]


def _draw_scene(rng: np.random.Generator, colours: tuple[str, ...] = COLOURS) -> _Scene:
    return _Scene(
        shape=_pick(rng, LABELS),
        colour=_pick(rng, colours),
        count=int(rng.integers(1, 4)),
        position=_pick(rng, POSITIONS),
        size=_pick(rng, SIZES),
    )


def _draw_row(rng: np.random.Generator, colours: tuple[str, ...] = COLOURS) -> _RowDraw:
    scene = _draw_scene(rng, colours)
    template = int(rng.integers(len(_TEMPLATES)))
    fmt = "png" if rng.random() < 0.5 else "jpeg"
    return _RowDraw(scene=scene, template=template, fmt=fmt, source=_pick(rng, SOURCES))


def _caption(scene: _Scene, template: int) -> str:
    noun = scene.shape if scene.count == 1 else f"{scene.shape}s"
    obj = f"{_COUNT_WORDS[scene.count]} {scene.size} {scene.colour} {noun}"
    be = "is" if scene.count == 1 else "are"
    return _TEMPLATES[template % len(_TEMPLATES)].format(obj=obj, pos=scene.position, be=be)


def _region(position: str, size: int) -> tuple[float, float, float, float]:
    s = float(size)
    h, m, q = s / 2, s * _MARGIN_FRACTION, s / 4
    boxes = {
        "top left": (m, m, h - m, h - m),
        "top right": (h + m, m, s - m, h - m),
        "bottom left": (m, h + m, h - m, s - m),
        "bottom right": (h + m, h + m, s - m, s - m),
        "center": (q + m, q + m, 3 * q - m, 3 * q - m),
    }
    return boxes[position]


_Layout = tuple[tuple[float, float], ...]
_PAIR: _Layout = ((-0.5, 0.0), (0.5, 0.0))
_TRIANGLE: _Layout = ((-0.5, 0.288675), (0.5, 0.288675), (0.0, -0.57735))
_LINE: _Layout = ((-1.0, 0.0), (0.0, 0.0), (1.0, 0.0))


def _arrangement(
    count: int, diameter: float, room: float, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """Offsets from the group centre: one disc, a pair, a line or a triangle, randomly turned."""
    if count == 1:
        return [(0.0, 0.0)]
    for _ in range(20):
        if count == 2:
            base, turn = _PAIR, math.pi
        elif rng.random() < 0.4:
            base, turn = _LINE, math.pi
        else:
            base, turn = _TRIANGLE, 2 * math.pi / 3
        angle = float(rng.uniform(0.0, turn))
        cos, sin = math.cos(angle), math.sin(angle)
        unit = [(x * cos - y * sin, x * sin + y * cos) for x, y in base]
        span = max(
            max(p[0] for p in unit) - min(p[0] for p in unit),
            max(p[1] for p in unit) - min(p[1] for p in unit),
        )
        limit = room / span
        if limit >= diameter:  # centres at least one diameter apart: no overlap
            spacing = float(rng.uniform(diameter, min(limit, diameter * 1.35)))
            return [(x * spacing, y * spacing) for x, y in unit]
    spacing = min(diameter, room)  # an upright triangle spans one spacing on each axis
    return [(x * spacing, y * spacing) for x, y in _TRIANGLE]


def _layout(
    count: int, diameter: float, box: tuple[float, float, float, float], rng: np.random.Generator
) -> list[tuple[float, float]]:
    """Centres of ``count`` non-overlapping discs of ``diameter`` inside ``box``, jittered."""
    x0, y0, x1, y1 = box
    pts = _arrangement(count, diameter, min(x1 - x0, y1 - y0) - diameter, rng)
    offset: list[float] = []
    for axis, (lo, hi) in enumerate(((x0, x1), (y0, y1))):
        low = lo + diameter / 2 - min(p[axis] for p in pts)
        high = hi - diameter / 2 - max(p[axis] for p in pts)
        # keep the group near the middle of its region so regions stay distinguishable
        offset.append((low + high) / 2 + float(rng.uniform(-0.25, 0.25)) * max(high - low, 0.0))
    return [(x + offset[0], y + offset[1]) for x, y in pts]


def _polygon(cx: float, cy: float, radii: list[float], angle: float) -> list[tuple[float, float]]:
    step = 2 * math.pi / len(radii)
    return [
        (cx + r * math.cos(angle + k * step), cy + r * math.sin(angle + k * step))
        for k, r in enumerate(radii)
    ]


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    shape: str,
    centre: tuple[float, float],
    diameter: float,
    tilt: float,
    fill: tuple[int, int, int],
) -> None:
    cx, cy = centre
    r = diameter / 2
    up = -math.pi / 2 + tilt
    if shape == "circle":
        rr = r * 0.95
        draw.ellipse((cx - rr, cy - rr, cx + rr, cy + rr), fill=fill)
    elif shape == "square":
        draw.polygon(_polygon(cx, cy, [r * 1.02] * 4, math.pi / 4 + tilt), fill=fill)
    elif shape == "triangle":
        big = r * 1.1  # circumradius; shifted away from the apex so the bbox is centred
        tx, ty = cx - math.cos(up) * big / 4, cy - math.sin(up) * big / 4
        draw.polygon(_polygon(tx, ty, [big] * 3, up), fill=fill)
    else:
        draw.polygon(_polygon(cx, cy, [r, r * 0.48] * 5, up), fill=fill)


def _background(size: int, supersample: int, rng: np.random.Generator) -> Image.Image:
    """A tinted grey backdrop with smooth shading, ``size * supersample`` px square: three
    octaves of bicubic-upsampled random grids (3x3, 6x6, 12x12 cells; amplitudes 50, 25,
    12.5 levels) on a base level, computed at ``size`` and upsampled (it is smooth).

    Real photographs have large-scale structure everywhere. Flat backgrounds made distinct
    scenes (one small shape each) differ by little more than a brightness change does, so a
    near-duplicate check that finds brightness-changed photographs merged them
    (``bench/results/curate_quality.json``). With shading, each render has its own layout.
    """
    base = float(rng.uniform(70.0, 200.0))
    tint = rng.uniform(-10.0, 10.0, 3)
    field = np.zeros((size, size), dtype=np.float32)
    for cells, amplitude in _SHADING_OCTAVES:
        grid = rng.uniform(-amplitude, amplitude, (cells, cells)).astype(np.float32)
        up = Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC)
        field += np.asarray(up, dtype=np.float32)
    rgb = base + tint[None, None, :] + field[:, :, None]
    small = Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8))
    side = size * supersample
    return small.resize((side, side), Image.Resampling.BILINEAR)


def _render(scene: _Scene, size: int, rng: np.random.Generator) -> Image.Image:
    """Draw ``scene`` on a shaded, noisy grey background (supersampled, then box-filtered)."""
    f = _SUPERSAMPLE
    canvas = _background(size, f, rng)
    draw = ImageDraw.Draw(canvas)
    diameter = _SIZE_FRACTION[scene.size] * size
    centres = _layout(scene.count, diameter, _region(scene.position, size), rng)
    rgb = np.array(COLOUR_RGB[scene.colour], dtype=np.float64) + rng.uniform(-12.0, 12.0, 3)
    c = np.clip(np.rint(rgb), 0, 255).astype(int)
    fill = (int(c[0]), int(c[1]), int(c[2]))
    for cx, cy in centres:
        tilt = math.radians(float(rng.uniform(-15.0, 15.0)))
        _draw_shape(draw, scene.shape, (cx * f, cy * f), diameter * f, tilt, fill)
    small = canvas.resize((size, size), Image.Resampling.BOX)
    noisy = np.asarray(small, dtype=np.float64) + rng.normal(
        0.0, float(rng.uniform(2.0, 6.0)), (size, size, 3)
    )
    return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8))


def _encode(image: Image.Image, fmt: str, quality: int = _JPEG_QUALITY) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, format="PNG")
    else:
        image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _garbage(rng: np.random.Generator) -> str:
    pieces = int(rng.integers(5, 12))
    return "".join(_pick(rng, _GARBAGE_PIECES) for _ in range(pieces))


def _mismatch(scene: _Scene, rng: np.random.Generator) -> _Scene:
    """A scene whose shape differs from ``scene`` (other attributes redrawn half the time)."""
    others = tuple(s for s in LABELS if s != scene.shape)
    other = _draw_scene(rng)
    keep = rng.random(3) < 0.5
    return _Scene(
        shape=_pick(rng, others),
        colour=scene.colour if keep[0] else other.colour,
        count=scene.count if keep[1] else other.count,
        position=scene.position if keep[2] else other.position,
        size=other.size,
    )


def _plan(n: int, n_defects: int, rng: np.random.Generator) -> dict[int, tuple[str, int | None]]:
    """Row -> (defect kind, original row for duplicates); kinds spread as evenly as possible.

    A duplicate's original is a clean row that comes earlier in the manifest.
    """
    if n_defects == 0:
        return {}
    base, extra = divmod(n_defects, len(DEFECT_KINDS))
    bonus = {int(k) for k in rng.permutation(len(DEFECT_KINDS))[:extra]}
    kinds = [
        kind for k, kind in enumerate(DEFECT_KINDS) for _ in range(base + (1 if k in bonus else 0))
    ]
    kinds = [kinds[int(j)] for j in rng.permutation(len(kinds))]
    positions = sorted(int(p) for p in rng.choice(n, size=n_defects, replace=False))
    for idx, pos in enumerate(positions):
        if pos != idx:
            break  # from here on, every defect row has a clean row somewhere before it
        if kinds[idx] in _DUPLICATE_KINDS:
            swap = next(
                (
                    j
                    for j in range(len(kinds))
                    if positions[j] != j and kinds[j] not in _DUPLICATE_KINDS
                ),
                None,
            )
            if swap is None:
                raise ConfigError(
                    f"synthetic data: {n_defects} defects in {n} rows leave no clean row "
                    "to duplicate; lower defect_share"
                )
            kinds[idx], kinds[swap] = kinds[swap], kinds[idx]
    defect_at = dict(zip(positions, kinds, strict=True))
    plan: dict[int, tuple[str, int | None]] = {}
    clean: list[int] = []
    used: set[int] = set()
    for i in range(n):
        kind = defect_at.get(i)
        if kind is None:
            clean.append(i)
        elif kind in _DUPLICATE_KINDS:
            fresh = [c for c in clean if c not in used] or clean
            orig = fresh[int(rng.integers(len(fresh)))]
            used.add(orig)
            plan[i] = (kind, orig)
        else:
            plan[i] = (kind, None)
    return plan


def _near_variant(original: bytes, fmt: str, size: int, rng: np.random.Generator) -> _Variant:
    """Re-encode (low JPEG quality), resize or crop ``original``; returns bytes, format, detail."""
    with Image.open(io.BytesIO(original)) as im:
        image = im.convert("RGB")
    variant = int(rng.integers(3))
    if variant == 0:
        quality = int(rng.integers(25, 41))
        return _encode(image, "jpeg", quality), "jpeg", f"jpeg q={quality}"
    if variant == 1:
        new = round(size * (1.25 if rng.random() < 0.5 else 0.75))
        resized = image.resize((new, new), Image.Resampling.BICUBIC)
        return _encode(resized, fmt), fmt, f"resized {size}->{new}"
    px = int(rng.integers(2, 5))
    cropped = image.crop((px, px, size - px, size - px))
    return _encode(cropped, fmt), fmt, f"crop {px}px"


def _make_row(
    kind: str | None,
    orig: int | None,
    draws: list[_RowDraw],
    i: int,
    size: int,
    row_rng: np.random.Generator,
    rng: np.random.Generator,
    originals: Mapping[int, bytes],
) -> _Artefact:
    """Build row ``i``'s caption and file bytes (``None``: no file) for defect ``kind``."""
    draw = draws[i]
    scene, fmt = draw.scene, draw.fmt
    caption = _caption(scene, draw.template)
    if kind is None:
        return _Artefact(scene, caption, fmt, _encode(_render(scene, size, row_rng), fmt))
    if orig is not None:
        o_scene, o_fmt = draws[orig].scene, draws[orig].fmt
        o_caption = _caption(o_scene, draws[orig].template)
        own_caption = _caption(o_scene, draw.template)
        if kind == "exact_duplicate":
            return _Artefact(o_scene, own_caption, o_fmt, originals[orig], "byte copy")
        if kind == "near_duplicate":
            data, v_fmt, detail = _near_variant(originals[orig], o_fmt, size, rng)
            return _Artefact(o_scene, own_caption, v_fmt, data, detail)
        data = _encode(_render(o_scene, size, row_rng), fmt)
        return _Artefact(o_scene, o_caption, fmt, data, "re-rendered, same caption")
    if kind == "mismatched_caption":
        wrong = _mismatch(scene, rng)
        data = _encode(_render(scene, size, row_rng), fmt)
        detail = f"caption says {wrong.shape}, image shows {scene.shape}"
        return _Artefact(scene, _caption(wrong, draw.template), fmt, data, detail)
    if kind == "missing_file":
        return _Artefact(scene, caption, fmt, None, "file not written")
    if kind == "zero_byte_file":
        return _Artefact(scene, caption, fmt, b"", "0 bytes")
    if kind == "not_an_image":
        detail, text = _NOT_IMAGES[int(rng.integers(len(_NOT_IMAGES)))]
        return _Artefact(scene, caption, "jpeg", text.encode("utf-8"), detail)
    data = _encode(_render(scene, size, row_rng), fmt)
    if kind == "corrupt_file":
        share = float(rng.uniform(0.30, 0.60))
        keep = max(1, int(len(data) * share))
        return _Artefact(scene, caption, fmt, data[:keep], f"truncated to {round(share * 100)}%")
    if kind == "empty_caption":
        blank = _BLANK_CAPTIONS[int(rng.integers(len(_BLANK_CAPTIONS)))]
        return _Artefact(scene, blank, fmt, data, f"caption {blank!r}")
    if kind == "garbage_caption":
        junk = _garbage(rng)
        return _Artefact(scene, junk, fmt, data, f"{len(junk)} garbage chars")
    raise AssertionError(f"unknown defect kind {kind!r}")


def _prepare_out_dir(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    images = out_dir / IMAGES_DIR
    if images.is_symlink() or images.is_file():
        images.unlink()
    elif images.exists():
        shutil.rmtree(images)
    images.mkdir()
    return images


def _check_args(n: int, seed: int, defect_share: float, image_size: int) -> None:
    if n < 0:
        raise ConfigError(f"synthetic data: n must be >= 0, got {n}")
    if seed < 0:
        raise ConfigError(f"synthetic data: seed must be >= 0, got {seed}")
    if not 0.0 <= defect_share <= 1.0:
        raise ConfigError(f"synthetic data: defect_share must be in [0, 1], got {defect_share}")
    if image_size < _MIN_IMAGE_SIZE:
        raise ConfigError(
            f"synthetic data: image_size must be >= {_MIN_IMAGE_SIZE}, got {image_size}"
        )


def generate_dataset(
    out_dir: str | Path,
    n: int,
    seed: int,
    *,
    defects: bool = True,
    defect_share: float = 0.25,
    image_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    shift: bool = False,
) -> GenerateSummary:
    """Write ``n`` image-caption rows (with injected defects unless ``defects=False``).

    Writes ``out_dir/images/``, ``ground_truth.parquet`` and, last, ``manifest.parquet``;
    the same arguments give byte-identical files. ``out_dir/images`` is replaced; nothing
    is written outside ``out_dir``. ``progress(done, total)`` is called after each row.
    ``shift=True`` draws colours from :data:`SHIFT_COLOURS` instead of :data:`COLOURS` (a
    new source for drift tests; the same seed draws the same scenes otherwise).
    """
    _check_args(n, seed, defect_share, image_size)
    root = np.random.default_rng(seed)
    attr_rng, plan_rng, defect_rng = root.spawn(3)
    row_rngs = root.spawn(n)
    colours = SHIFT_COLOURS if shift else COLOURS
    draws = [_draw_row(attr_rng, colours) for _ in range(n)]
    n_defects = round(n * defect_share) if defects else 0
    plan = _plan(n, n_defects, plan_rng)
    wanted = {orig for _, orig in plan.values() if orig is not None}

    out = Path(out_dir)
    images = _prepare_out_dir(out)
    ids = [f"s{seed}-{i:06d}" for i in range(n)]
    manifest: dict[str, list[str]] = {c: [] for c in MANIFEST_SCHEMA.names}
    truth: dict[str, list[str | None]] = {c: [] for c in GROUND_TRUTH_SCHEMA.names}
    originals: dict[int, bytes] = {}
    counts = dict.fromkeys(DEFECT_KINDS, 0)
    for i in range(n):
        kind, orig = plan.get(i, (None, None))
        art = _make_row(kind, orig, draws, i, image_size, row_rngs[i], defect_rng, originals)
        rel = f"{IMAGES_DIR}/{i:06d}{_EXTENSIONS[art.fmt]}"
        if art.data is not None:
            (images / rel.rsplit("/", 1)[1]).write_bytes(art.data)
            if i in wanted:
                originals[i] = art.data
        if kind is not None:
            counts[kind] += 1
            truth["id"].append(ids[i])
            truth["kind"].append(kind)
            truth["duplicate_of"].append(None if orig is None else ids[orig])
            truth["detail"].append(art.detail)
        manifest["id"].append(ids[i])
        manifest["image"].append(rel)
        manifest["caption"].append(art.caption)
        manifest["label"].append(art.scene.shape)
        manifest["source"].append(draws[i].source)
        if progress is not None:
            progress(i + 1, n)

    gt_path = out / GROUND_TRUTH_FILE
    pq.write_table(pa.Table.from_pydict(truth, schema=GROUND_TRUTH_SCHEMA), gt_path)
    manifest_path = out / MANIFEST_FILE
    pq.write_table(pa.Table.from_pydict(manifest, schema=MANIFEST_SCHEMA), manifest_path)
    return GenerateSummary(
        out_dir=out, rows=n, defects=counts, manifest=manifest_path, ground_truth=gt_path
    )
