"""Sub-quadratic Hamming-radius search over 64-bit hashes (multi-index hashing).

:func:`hamming_pairs` splits the 64 bits into ``m`` contiguous bands. By the pigeonhole
principle two hashes within distance ``r`` agree to within ``r // m`` bits on at least one
band, so each band is searched for keys within that small radius (exact bucket joins plus
bit-flip probes), and every candidate is verified with a popcount. A pair is emitted only
from the first band where it qualifies, so no global de-duplication is needed. ``m`` is
picked by a cost model (many short bands for small inputs, 4 bands of 16 bits at 1M).
:func:`aligned_hamming_pairs` runs it over full-frame and centre-crop hashes together, so
pairs are found in the same three alignments the layout verification uses.

:func:`layout_distance` is the verification distance of near-duplicate candidates: the
RMS difference of two colour layouts (see :mod:`pairflow.data.signatures`), minimised
over full-frame/centre-crop alignments so that small crops still match.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import combinations, pairwise

import numpy as np
import numpy.typing as npt

from pairflow.data.signatures import LAYOUT_BYTES
from pairflow.parallel import thread_map

__all__ = [
    "LAYOUT_CHROMA_WEIGHT",
    "HammingPairs",
    "PhotometricRule",
    "aligned_hamming_pairs",
    "brute_force_pairs",
    "hamming_pairs",
    "layout_distance",
    "layout_structure",
    "photometric_match",
    "weighted_layout_distance",
    "weighted_layouts",
]

IntArray = npt.NDArray[np.int64]
_DENSE_MAX_BITS = 22  # bands up to this width use a dense bucket table (<= 4M entries)
_MAX_PROBES = 100_000  # bit-flip probes per band allowed for an explicit band count
_CHUNK = 1 << 18  # candidate pairs materialised at once
LAYOUT_CHROMA_WEIGHT = 3.0  # chroma cells weigh 3x luma cells in layout_distance


@dataclass(frozen=True)
class HammingPairs:
    """Pairs ``left[k] < right[k]`` (row positions) with ``distance[k] <= radius``.

    Sorted by (left, right). ``candidates`` counts the pairs examined (bucket joins);
    ``bands`` is the number of bands used.
    """

    left: IntArray
    right: IntArray
    distance: IntArray
    candidates: int
    bands: int

    def __len__(self) -> int:
        return len(self.left)


@dataclass(frozen=True)
class _Band:
    shift: int
    bits: int
    radius: int

    @property
    def mask(self) -> np.uint64:
        return np.uint64((1 << self.bits) - 1)

    def keys(self, h: npt.NDArray[np.uint64]) -> IntArray:
        return ((h >> np.uint64(self.shift)) & self.mask).astype(np.int64)


def _bands(m: int, radius: int) -> list[_Band]:
    widths = [64 // m + (1 if b < 64 % m else 0) for b in range(m)]
    shifts = np.cumsum([0, *widths[:-1]]).tolist()
    return [_Band(int(s), w, radius // m) for s, w in zip(shifts, widths, strict=True)]


def _ball(bits: int, r: int) -> int:
    return sum(math.comb(bits, k) for k in range(r + 1))


def _choose_bands(n: int, radius: int) -> list[_Band]:
    """Band layout with the lowest estimated cost for ``n`` uniformly spread hashes."""
    best: tuple[float, int] | None = None
    for m in range(1, min(radius + 1, 32) + 1):
        cost = 0.0
        for band in _bands(m, radius):
            probes = _ball(band.bits, band.radius)
            # measured: a probe costs ~1.5 candidate checks per row, plus fixed call overhead
            cost += probes * (1.5 * n + 2500.0) + n * n / 2.0 * probes / 2.0**band.bits
        if best is None or cost < best[0]:
            best = (cost, m)
    assert best is not None
    return _bands(best[1], radius)


def _flip_masks(bits: int, r: int) -> list[int]:
    """All non-zero masks of ``bits`` bits with at most ``r`` bits set."""
    return [
        sum(1 << b for b in combo)
        for k in range(1, r + 1)
        for combo in combinations(range(bits), k)
    ]


def _expand(
    src: IntArray, base: IntArray, count: IntArray, order: IntArray
) -> Iterator[tuple[IntArray, IntArray]]:
    """Pairs ``(src[k], order[base[k] + t])`` for ``t < count[k]``, in bounded chunks."""
    keep = count > 0
    src, base, count = src[keep], base[keep], count[keep]
    if len(src) == 0:
        return
    ends = np.cumsum(count)
    cuts = np.searchsorted(ends, np.arange(_CHUNK, int(ends[-1]), _CHUNK), side="left")
    bounds = [0, *np.unique(cuts + 1).tolist(), len(src)]
    for lo, hi in pairwise(bounds):
        if hi <= lo:
            continue
        c = count[lo:hi]
        starts = np.cumsum(c) - c
        total = int(starts[-1] + c[-1])
        # segment of each output slot, by a cumsum of segment starts instead of np.repeat:
        # ufuncs and gathers release the GIL (np.repeat does not), so probes scale on threads
        seg = np.zeros(total, dtype=np.int64)
        seg[starts[1:]] = 1
        np.cumsum(seg, out=seg)
        pos = base[lo:hi][seg] + (np.arange(total, dtype=np.int64) - starts[seg])
        yield src[lo:hi][seg], order[pos]


class _BucketTable:
    """Rows grouped by band key: ``order`` sorted by key, plus key -> (start, count)."""

    def __init__(self, keys: IntArray, bits: int) -> None:
        self.keys = keys
        self.order = np.argsort(keys, kind="stable").astype(np.int64)
        self.dense = bits <= _DENSE_MAX_BITS
        if self.dense:
            counts = np.bincount(keys, minlength=1 << bits).astype(np.int64)
            self.counts = counts
            self.starts = np.cumsum(counts) - counts
        else:
            sorted_keys = keys[self.order]
            self.unique, first, cnt = np.unique(sorted_keys, return_index=True, return_counts=True)
            self.first = first.astype(np.int64)
            self.cnt = cnt.astype(np.int64)

    def lookup(self, wanted: IntArray) -> tuple[IntArray, IntArray]:
        """(start in ``order``, count) of the bucket of each wanted key (count 0: none)."""
        if self.dense:
            return self.starts[wanted], self.counts[wanted]
        idx = np.searchsorted(self.unique, wanted)
        idx = np.minimum(idx, len(self.unique) - 1)
        hit = self.unique[idx] == wanted
        return self.first[idx], np.where(hit, self.cnt[idx], 0)

    def within(self) -> tuple[IntArray, IntArray, IntArray]:
        """(src, base, count) for all pairs inside one bucket (each unordered pair once)."""
        n = len(self.order)
        sorted_keys = self.keys[self.order]
        boundary = np.flatnonzero(np.diff(sorted_keys)) + 1
        ends = np.repeat(np.append(boundary, n), np.diff(np.concatenate([[0], boundary, [n]])))
        pos = np.arange(n, dtype=np.int64)
        return self.order, pos + 1, ends - pos - 1


def _probe_candidates(
    keys: IntArray, table: _BucketTable, mask: int, query: IntArray | None
) -> Iterator[tuple[IntArray, IntArray]]:
    """Candidate pairs of one probe of a band, as (query row, table row).

    Self-join (``query`` None, ``keys`` are the table's): ``mask`` 0 joins each bucket with
    itself, another mask joins bucket ``k`` with ``k ^ mask``, each unordered pair once.
    Cross join (``query`` holds the query rows' keys): every query row meets the table
    rows in bucket ``key ^ mask``.
    """
    if query is not None:
        start, count = table.lookup(query ^ mask)
        yield from _expand(np.arange(len(query), dtype=np.int64), start, count, table.order)
        return
    if mask == 0:
        yield from _expand(*table.within(), table.order)
        return
    partner = keys ^ mask
    lower = keys < partner  # each unordered bucket pair is joined once
    start, count = table.lookup(partner[lower])
    yield from _expand(np.flatnonzero(lower).astype(np.int64), start, count, table.order)


def _as_uint64(hashes: npt.NDArray[np.int64] | npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    arr = np.ascontiguousarray(hashes)
    if arr.dtype in (np.int64, np.uint64):
        out: npt.NDArray[np.uint64] = arr.view(np.uint64)
        return out
    raise TypeError(f"hashes must be int64 or uint64, got {arr.dtype}")


def hamming_pairs(
    hashes: npt.NDArray[np.int64] | npt.NDArray[np.uint64],
    radius: int,
    *,
    num_bands: int | None = None,
    threads: int = 1,
) -> HammingPairs:
    """All pairs of positions whose 64-bit hashes differ in at most ``radius`` bits.

    ``num_bands`` overrides the cost model's band count (1..64). ``threads`` > 1 runs the
    band probes on that many threads (numpy releases the GIL; the result is the same).
    """
    _check_radius(radius)
    if num_bands is not None and not 1 <= num_bands <= 64:
        raise ValueError(f"num_bands must be in [1, 64], got {num_bands}")
    h = _as_uint64(hashes)
    empty = np.empty(0, dtype=np.int64)
    if len(h) < 2:
        return HammingPairs(empty, empty, empty, 0, 0)
    bands = _choose_bands(len(h), radius) if num_bands is None else _bands(num_bands, radius)
    if max(_ball(b.bits, b.radius) for b in bands) > _MAX_PROBES:
        raise ValueError(f"{num_bands} band(s) at radius {radius} need too many bit-flip probes")
    left, right, examined = _join(_BandIndex(h, bands, threads), None, radius, threads)
    # sorting one int64 key (left * n + right) is several times faster than a lexsort
    key = np.minimum(left, right) * len(h) + np.maximum(left, right)
    key.sort()
    left, right = np.divmod(key, len(h))
    dist = np.bitwise_count(h[left] ^ h[right]).astype(np.int64)
    return HammingPairs(left, right, dist, examined, len(bands))


def _check_radius(radius: int) -> None:
    if not 0 <= radius <= 63:
        raise ValueError(f"radius must be in [0, 63], got {radius}")


class _BandIndex:
    """Bucket tables of ``hashes`` for each band, built once and probed by any join."""

    def __init__(self, hashes: npt.NDArray[np.uint64], bands: list[_Band], threads: int) -> None:
        self.hashes = hashes
        self.bands = bands
        self.keys = [band.keys(hashes) for band in bands]
        self.tables = thread_map(
            lambda b: _BucketTable(self.keys[b], bands[b].bits), range(len(bands)), threads
        )


def _join(
    index: _BandIndex,
    query_hashes: npt.NDArray[np.uint64] | None,
    radius: int,
    threads: int,
) -> tuple[IntArray, IntArray, int]:
    """(query rows, indexed rows, pairs examined) within ``radius``: a self-join of the
    indexed hashes (each unordered pair once) when ``query_hashes`` is None, else every
    query row against every indexed row. One task per (band, probe), on ``threads``."""
    t, bands, keys, tables = index.hashes, index.bands, index.keys, index.tables
    q = t if query_hashes is None else query_hashes
    qkeys = None if query_hashes is None else [band.keys(query_hashes) for band in bands]
    tasks = [
        (b, mask)
        for b, band in enumerate(bands)
        for mask in (0, *_flip_masks(band.bits, band.radius))
    ]

    def probe(task: tuple[int, int]) -> tuple[IntArray, IntArray, int]:
        b, mask = task
        lefts: list[IntArray] = []
        rights: list[IntArray] = []
        examined = 0
        query = None if qkeys is None else qkeys[b]
        for a, c in _probe_candidates(keys[b], tables[b], mask, query):
            examined += len(a)
            x = q[a] ^ t[c]
            close = np.flatnonzero(np.bitwise_count(x) <= radius)  # few survive
            x, a, c = x[close], a[close], c[close]
            first = np.ones(len(x), dtype=bool)
            for earlier in bands[:b]:  # a pair is emitted by the first band it qualifies in
                part = (x >> np.uint64(earlier.shift)) & earlier.mask
                first &= np.bitwise_count(part) > earlier.radius
            lefts.append(a[first])
            rights.append(c[first])
        return _concat(lefts), _concat(rights), examined

    found = thread_map(probe, tasks, threads)
    left = np.concatenate([f[0] for f in found])
    right = np.concatenate([f[1] for f in found])
    return left, right, sum(f[2] for f in found)


def _concat(parts: list[IntArray]) -> IntArray:
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)


def aligned_hamming_pairs(
    full: npt.NDArray[np.int64] | npt.NDArray[np.uint64],
    crop: npt.NDArray[np.int64] | npt.NDArray[np.uint64],
    radius: int,
    *,
    threads: int = 1,
) -> HammingPairs:
    """Rows ``i < j`` whose hashes are within ``radius`` in some alignment.

    ``full[i]``/``crop[i]`` hash row ``i``'s full frame and its centre crop. A pair qualifies
    when full/full, crop(i)/full(j) or full(i)/crop(j) is within ``radius`` -- the same three
    alignments :func:`layout_distance` verifies -- so a small crop or border needs no coarse
    hash to stay in reach. ``distance`` is the smallest of the three. The frames are
    self-joined and the crops cross-joined against the frames, so crop/crop pairs (most of
    the pairs a self-join over all ``2n`` hashes would find) are never formed.
    """
    _check_radius(radius)
    f, c = _as_uint64(full), _as_uint64(crop)
    if len(f) != len(c):
        raise ValueError(f"full and crop hashes differ in length: {len(f)} != {len(c)}")
    n = len(f)
    empty = np.empty(0, dtype=np.int64)
    if n < 2:
        return HammingPairs(empty, empty, empty, 0, 0)
    bands = _choose_bands(2 * n, radius)
    # full/full as a self-join; crop(i)/full(j) and full(i)/crop(j) as one cross join of
    # the crops against the frames (crop/crop pairs are never formed)
    index = _BandIndex(f, bands, threads)  # both joins probe the frames' tables
    fa, fb, seen_full = _join(index, None, radius, threads)
    ca, cb, seen_cross = _join(index, c, radius, threads)
    other = ca != cb
    a = np.concatenate([fa, ca[other]])
    b = np.concatenate([fb, cb[other]])
    dist = np.concatenate(
        [np.bitwise_count(f[fa] ^ f[fb]), np.bitwise_count(c[ca[other]] ^ f[cb[other]])]
    ).astype(np.int64)
    # one int64 key per pair, distance in the low digits: sorted, the first key of each pair
    # carries its smallest distance over the alignments
    key = (np.minimum(a, b) * n + np.maximum(a, b)) * 65 + dist
    key.sort()
    pair, dist = np.divmod(key, 65)
    first = np.r_[True, pair[1:] != pair[:-1]] if len(pair) else np.ones(0, bool)
    lo, hi = np.divmod(pair[first], n)
    return HammingPairs(lo, hi, dist[first], seen_full + seen_cross, len(bands))


def brute_force_pairs(
    hashes: npt.NDArray[np.int64] | npt.NDArray[np.uint64], radius: int
) -> HammingPairs:
    """O(n^2) reference for :func:`hamming_pairs` (tests and tiny inputs only)."""
    h = _as_uint64(hashes)
    n = len(h)
    left, right = np.triu_indices(n, 1)
    d = np.bitwise_count(h[left] ^ h[right]).astype(np.int64)
    ok = d <= radius
    return HammingPairs(left[ok].astype(np.int64), right[ok].astype(np.int64), d[ok], len(left), 1)


def weighted_layouts(
    layouts: npt.NDArray[np.uint8], chroma_weight: float | None = None
) -> npt.NDArray[np.float32]:
    """``(k, 2, 96)`` uint8 layouts as float32 with chroma cells weighted (default
    :data:`LAYOUT_CHROMA_WEIGHT`): the space :func:`weighted_layout_distance` measures in."""
    w = np.ones(LAYOUT_BYTES, dtype=np.float32)
    w[64:] = LAYOUT_CHROMA_WEIGHT if chroma_weight is None else chroma_weight
    out: npt.NDArray[np.float32] = layouts.astype(np.float32) * w
    return out


def weighted_layout_distance(
    wa: npt.NDArray[np.float32], wb: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    """Per-pair RMS difference of weighted layouts (see :func:`layout_distance`)."""
    best = np.full(len(wa), np.inf, dtype=np.float32)
    for va, vb in ((0, 0), (1, 0), (0, 1)):
        d = wa[:, va] - wb[:, vb]
        best = np.minimum(best, np.einsum("ij,ij->i", d, d))
    out: npt.NDArray[np.float32] = np.sqrt(best / np.float32(LAYOUT_BYTES))
    return out


def layout_distance(
    a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], chroma_weight: float | None = None
) -> npt.NDArray[np.float32]:
    """Per-pair RMS difference of layouts ``a``, ``b`` (each ``(k, 2, 96)`` uint8).

    Chroma cells are weighted by ``chroma_weight`` (default :data:`LAYOUT_CHROMA_WEIGHT`);
    the result is the minimum over the alignments full/full, crop(a)/full(b), full(a)/crop(b).
    """
    return weighted_layout_distance(
        weighted_layouts(a, chroma_weight), weighted_layouts(b, chroma_weight)
    )


@dataclass(frozen=True)
class PhotometricRule:
    """Near duplicates that the absolute colour layout misses, found through luma-shape hashes.

    The layout check (:func:`layout_distance` against ``near_layout_max_rms``) compares
    absolute levels, so it misses photographs whose brightness or contrast changed, that
    carry a small overlay, or whose border was cut. A candidate pair is accepted when

    - its layout-DCT hashes (8x8 luma shape) are within ``loose_dct`` and the plain layout
      RMS within ``loose_rms`` (re-encodes, resizes, small crops of low-contrast photos); or
    - its plain layout RMS is within ``max_rms`` (brightness/contrast edits of up to 30%
      moved it by <= 45 on the dev set; distinct images that pass the checks below sit at
      50-100) and either
      - both images have real structure (8x8 luma std >= ``min_structure`` levels), the
        layout-DCT hashes are within ``structured_dct``, the layout RMS after fitting a luma
        gain/offset (gain clipped to [0.7, 1.45]) within ``compensated_rms`` and the chroma
        RMS within ``chroma_rms`` (brightness/contrast changes of structured photos); or
      - their grey pHashes (32x32 grey DCT, ``img_phash``) are within ``phash_radius`` and
        the compensated layout RMS within ``phash_compensated_rms``, plus
        ``phash_rms_per_bit`` for every bit the hashes are closer than the radius (contrast
        changes that clip highlights move the layout more than the luma shape): brightness
        changes of low-contrast photos, overlays and crops the 8x8 grids blur together.

    Thresholds come from grids over every pair of the real-photo dev set (three draws) and
    generator datasets of 600 (ten seeds), 5,000 and 20,000 rows
    (``bench/results/curate_quality.json``). Photo cluster recall rises from 0.32 (layout
    only) to 0.95-0.97 at precision 1.0; the generator keeps >= 0.99 precision at 20,000
    rows. The generator's scenes have shaded backgrounds since this rule: on flat
    backgrounds, distinct scenes (one small shape each) differ by no more than a brightness
    change does. Shading gives generated images structure too, so the structured branch is
    tighter than it was on flat renders (compensated RMS 10 instead of 15, chroma 5 instead
    of 8: at the old limits 45 distinct pairs merged among 20,000 rows).
    """

    loose_dct: int = 10
    loose_rms: float = 4.0
    structured_dct: int = 14
    min_structure: float = 20.0
    compensated_rms: float = 10.0
    chroma_rms: float = 5.0
    phash_radius: int = 14
    phash_compensated_rms: float = 12.0
    phash_rms_per_bit: float = 0.5
    max_rms: float = 40.0

    @property
    def radius(self) -> int:
        """The Hamming radius layout-DCT candidates must be searched in."""
        return max(self.loose_dct, self.structured_dct)


def _compensated_distance(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> np.ndarray:
    """RMS of ``a - (gain * b + offset)`` on luma (chroma scaled by the gain around 128,
    weighted like :func:`layout_distance`), minimised over the three alignments."""
    best = np.full(len(a), np.inf, dtype=np.float32)
    luma = LAYOUT_BYTES - 32
    for va, vb in ((0, 0), (1, 0), (0, 1)):
        xl, yl = a[:, va, :luma], b[:, vb, :luma]
        xc, yc = a[:, va, luma:] - 128.0, b[:, vb, luma:] - 128.0
        xl = xl - xl.mean(axis=1, keepdims=True)
        yl = yl - yl.mean(axis=1, keepdims=True)
        gain = np.einsum("ij,ij->i", xl, yl) / np.maximum(np.einsum("ij,ij->i", yl, yl), 1.0)
        gain = np.clip(gain, 0.7, 1.45)[:, None].astype(np.float32)
        rl = xl - gain * yl
        rc = LAYOUT_CHROMA_WEIGHT * (xc - gain * yc)
        d = (np.einsum("ij,ij->i", rl, rl) + np.einsum("ij,ij->i", rc, rc)) / LAYOUT_BYTES
        best = np.minimum(best, d.astype(np.float32))
    out: npt.NDArray[np.float32] = np.sqrt(best)
    return out


def layout_structure(full: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Std of the 8x8 luma grid of full-frame layouts ``(n, 96)``: how much large-scale
    structure an image has (flat renders and blank frames: a few levels; photos: tens)."""
    out: npt.NDArray[np.float32] = full[:, : LAYOUT_BYTES - 32].astype(np.float32).std(axis=1)
    return out


def photometric_match(
    la: npt.NDArray[np.uint8],
    lb: npt.NDArray[np.uint8],
    dct_distance: IntArray,
    phash_distance: IntArray,
    rms: npt.NDArray[np.float32],
    rule: PhotometricRule,
) -> npt.NDArray[np.bool_]:
    """Which pairs of layouts ``la``/``lb`` (``(k, 2, 96)`` uint8) :class:`PhotometricRule`
    accepts, given their layout-DCT and grey pHash distances and plain
    :func:`layout_distance` ``rms``."""
    loose = (dct_distance <= rule.loose_dct) & (rms <= rule.loose_rms)
    luma = LAYOUT_BYTES - 32
    a = la.astype(np.float32)
    b = lb.astype(np.float32)
    structure = np.minimum(layout_structure(la[:, 0]), layout_structure(lb[:, 0]))
    chroma = np.sqrt(((a[:, 0, luma:] - b[:, 0, luma:]) ** 2).mean(axis=1))
    structured = (
        (dct_distance <= rule.structured_dct)
        & (structure >= rule.min_structure)
        & (chroma <= rule.chroma_rms)
    )
    grey = phash_distance <= rule.phash_radius
    need = np.flatnonzero(~loose & (structured | grey))
    comp = np.full(len(a), np.inf, dtype=np.float32)
    if len(need):
        comp[need] = _compensated_distance(a[need], b[need])
    grey_limit = rule.phash_compensated_rms + rule.phash_rms_per_bit * (
        rule.phash_radius - phash_distance
    )
    out: npt.NDArray[np.bool_] = loose | (
        (rms <= rule.max_rms)
        & ((structured & (comp <= rule.compensated_rms)) | (grey & (comp <= grey_limit)))
    )
    return out
