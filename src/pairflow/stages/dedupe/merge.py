"""Global dedupe over the union of validated shards: exact -> near -> captions -> semantic.

Every stage works on the rows in ``id`` order (a permutation; the frame is not copied), so
the result does not depend on input row order -- which is what makes deduping the
concatenated shards equal to deduping the unsharded dataset. Outputs are sorted by id.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from pairflow.config import DedupeConfig
from pairflow.data.signatures import (
    IMAGE_HASH_COLUMNS,
    IMAGE_PHASH_COLUMN,
    LAYOUT_BYTES,
    layout_array,
    layout_dct_hash,
    layout_phash,
)
from pairflow.errors import InputDataError
from pairflow.metrics import DedupeMetrics
from pairflow.parallel import resolve_threads, thread_map
from pairflow.stages.dedupe.captions import caption_keys, caption_labels, near_caption_pairs
from pairflow.stages.dedupe.groups import Groups, components, group_by_labels, survivor_rank
from pairflow.stages.dedupe.near import (
    PhotometricRule,
    aligned_hamming_pairs,
    hamming_pairs,
    layout_structure,
    photometric_match,
    weighted_layout_distance,
    weighted_layouts,
)
from pairflow.stages.dedupe.semantic import semantic_duplicates

__all__ = ["REASONS", "STAGE", "DedupeResult", "dedupe_frame"]

STAGE = "dedupe"
REASONS: tuple[str, ...] = (
    "exact_duplicate",
    "near_duplicate",
    "duplicate_caption",
    "near_duplicate_caption",
    "semantic_duplicate",
)
# Near-duplicate verification compares colour layouts (RMS over 0..255 levels, chroma
# weighted 3x) against DedupeConfig.near_layout_max_rms.
_VERIFY_CHUNK = 1 << 12  # pairs per verification chunk: its arrays stay in cache (measured best)

IntArray = npt.NDArray[np.int64]


@dataclass
class DedupeResult:
    """Kept rows, rejected rows (``reason``, ``detail``, ``duplicate_of``, ``stage``), figures."""

    kept: pd.DataFrame
    rejected: pd.DataFrame
    counts: dict[str, int]
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_in(self) -> int:
        return len(self.kept) + len(self.rejected)


class _State:
    """The input frame, its canonical (id) order and the running decision for each row.

    Row numbers used by the stages are canonical positions: ``order[i]`` is the position
    in ``df`` of the ``i``-th smallest id. The frame itself is never copied or re-sorted.
    """

    def __init__(self, df: pd.DataFrame) -> None:
        self.df = df
        ids = df["id"].to_numpy(dtype=object)
        self.order: IntArray = np.argsort(ids, kind="stable").astype(np.int64)
        self.ids: npt.NDArray[np.object_] = ids[self.order]
        self.rank = survivor_rank(df, self.order)
        n = len(df)
        self.alive = np.ones(n, dtype=bool)
        self.reason = np.full(n, None, dtype=object)
        self.detail = np.full(n, None, dtype=object)
        self.duplicate_of = np.full(n, None, dtype=object)

    def column(self, name: str) -> npt.NDArray[Any]:
        """Values of column ``name`` in canonical order."""
        values: npt.NDArray[Any] = self.df[name].to_numpy()[self.order]
        return values

    def drop(
        self, rows: IntArray, reason: str, survivors: IntArray, details: Sequence[str]
    ) -> None:
        self.alive[rows] = False
        self.reason[rows] = reason
        self.duplicate_of[rows] = self.ids[survivors]
        self.detail[rows] = np.asarray(details, dtype=object)


def _check_columns(df: pd.DataFrame, cfg: DedupeConfig) -> None:
    needed = ["id"]
    if cfg.exact:
        needed.append("img_sha256")
    if cfg.near:
        needed.extend(IMAGE_HASH_COLUMNS)
        if cfg.near_photometric:
            needed.append(IMAGE_PHASH_COLUMN)
    if cfg.captions or cfg.near_captions:
        needed.append("caption")
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise InputDataError(
            f"dedupe input: missing column(s) {', '.join(missing)} "
            "(image signatures are added by the validate step)"
        )
    ids = df["id"]
    if ids.isna().any():
        raise InputDataError("dedupe input: column id has missing values")
    dup = ids[ids.duplicated()]
    if len(dup):
        raise InputDataError(
            f"dedupe input: {len(dup)} duplicate id(s), e.g. {dup.iloc[0]!r} "
            "(ids must be unique across shards)"
        )


def _int64_column(series: pd.Series, name: str) -> tuple[IntArray, npt.NDArray[np.bool_]]:
    """(values, present) of a signature column; int64 bits are kept exactly."""
    dtype = series.dtype
    if isinstance(dtype, np.dtype) and dtype.kind in "iu":
        values: IntArray = series.to_numpy().astype(np.int64, copy=False)
        return values, np.ones(len(series), dtype=bool)
    if isinstance(dtype, np.dtype) and dtype.kind == "f" and not series.notna().any():
        return np.zeros(len(series), dtype=np.int64), np.zeros(len(series), dtype=bool)
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        raise InputDataError(
            f"dedupe input: column {name} is float ({dtype}); signature hashes must be int64 "
            "(a float column cannot hold 64-bit hashes exactly)"
        )
    try:
        exact = pd.Series(series.to_numpy(dtype=object), dtype="Int64")
    except (TypeError, ValueError) as exc:
        raise InputDataError(f"dedupe input: column {name} is not int64 ({exc})") from exc
    present = exact.notna().to_numpy(dtype=bool)
    ints: IntArray = exact.to_numpy(dtype=np.int64, na_value=0)
    return ints, present


def _exact(state: _State) -> dict[str, Any]:
    sha = pd.Series(state.column("img_sha256"), dtype=object)
    valid = sha.notna().to_numpy() & state.alive
    codes, _ = pd.factorize(sha.where(valid, None))
    groups = group_by_labels(codes.astype(np.int64), state.rank)
    dropped = groups.dropped
    survivors = groups.survivor[dropped]
    state.drop(
        dropped,
        "exact_duplicate",
        survivors,
        [f"byte-identical to {state.ids[s]}" for s in survivors],
    )
    return {"groups": groups.count, "dropped": len(dropped)}


class _Layouts:
    """Signature words of the canonical rows, gathered on demand (no full copy)."""

    def __init__(self, state: _State) -> None:
        self.order = state.order
        self.columns: list[IntArray] = []
        present = np.ones(len(state.df), dtype=bool)
        for name in IMAGE_HASH_COLUMNS:
            values, ok = _int64_column(state.df[name], name)
            self.columns.append(values)
            present &= ok
        self.grey: IntArray | None = None
        if IMAGE_PHASH_COLUMN in state.df.columns:
            self.grey, ok = _int64_column(state.df[IMAGE_PHASH_COLUMN], IMAGE_PHASH_COLUMN)
            present &= ok
        self.present = present[self.order]

    def words(self, rows: IntArray, count: int = len(IMAGE_HASH_COLUMNS)) -> IntArray:
        """``(len(rows), count)`` little-endian int64 words of canonical ``rows``."""
        pos = self.order[rows]
        out = np.empty((len(rows), count), dtype="<i8")
        for k in range(count):
            out[:, k] = self.columns[k][pos]
        return out

    def phashes(self, rows: IntArray, chunk: int = 1 << 14) -> tuple[IntArray, IntArray]:
        """(full-frame, centre-crop) 64-bit layout hashes of canonical ``rows``."""
        full = np.empty(len(rows), dtype=np.int64)
        crop = np.empty(len(rows), dtype=np.int64)
        for start in range(0, len(rows), chunk):
            words = self.words(rows[start : start + chunk])
            views = words.view(np.uint8).reshape(len(words), 2, LAYOUT_BYTES)
            full[start : start + chunk] = layout_phash(np.ascontiguousarray(views[:, 0]))
            crop[start : start + chunk] = layout_phash(np.ascontiguousarray(views[:, 1]))
        return full, crop

    def grey_phashes(self, rows: IntArray) -> IntArray:
        """Grey pHashes (``img_phash``) of canonical ``rows``."""
        if self.grey is None:
            raise InputDataError(f"dedupe input: no {IMAGE_PHASH_COLUMN} column")
        out: IntArray = self.grey[self.order[rows]]
        return out

    def dct_hashes(
        self, rows: IntArray, chunk: int = 1 << 14
    ) -> tuple[IntArray, npt.NDArray[np.float32]]:
        """(64-bit DCT hashes, luma structure) of the full frames of canonical ``rows``;
        structure is the std of the 8x8 luma grid (:func:`layout_structure`)."""
        out = np.empty(len(rows), dtype=np.int64)
        structure = np.empty(len(rows), dtype=np.float32)
        for start in range(0, len(rows), chunk):
            full = np.ascontiguousarray(layout_array(self.words(rows[start : start + chunk]))[:, 0])
            out[start : start + chunk] = layout_dct_hash(full)
            structure[start : start + chunk] = layout_structure(full)
        return out, structure

    def distance(self, a: IntArray, b: IntArray, threads: int = 1) -> npt.NDArray[np.float32]:
        """:func:`layout_distance` of canonical row pairs ``(a[k], b[k])``; chunks of pairs
        run on ``threads`` threads (each writes its own slice of the result)."""
        out = np.empty(len(a), dtype=np.float32)
        if len(a) == 0:
            return out
        # a row sits in many candidate pairs: gather and weight each involved row once
        involved, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
        layouts = self.words(involved).view(np.uint8).reshape(len(involved), 2, LAYOUT_BYTES)
        weighted = weighted_layouts(layouts)
        ia, ib = inverse[: len(a)], inverse[len(a) :]

        def chunk(start: int) -> None:
            end = start + _VERIFY_CHUNK
            out[start:end] = weighted_layout_distance(
                weighted[ia[start:end]], weighted[ib[start:end]]
            )

        thread_map(chunk, range(0, len(a), _VERIFY_CHUNK), threads)
        return out


def _edge_details(
    state: _State,
    groups: Groups,
    left: IntArray,
    right: IntArray,
    describe: Sequence[str],
) -> list[str]:
    """For each dropped row: its edge to the survivor if any, else its first listed edge."""
    dropped = groups.dropped
    if len(dropped) == 0:
        return []
    src = np.concatenate([left, right])
    dst = np.concatenate([right, left])
    edge = np.tile(np.arange(len(left), dtype=np.int64), 2)
    mine = np.isin(src, dropped)
    src, dst, edge = src[mine], dst[mine], edge[mine]
    indirect = (dst != groups.survivor[src]).astype(np.int64)
    order = np.lexsort((edge, indirect, src))
    src, dst, edge = src[order], dst[order], edge[order]
    first = np.r_[True, src[1:] != src[:-1]]
    # every dropped row has an edge, so the first edge of each source lines up with `dropped`
    return [
        f"{describe[e]} to {state.ids[d]}"
        for d, e in zip(dst[first].tolist(), edge[first].tolist(), strict=True)
    ]


def _identical_layouts(
    layouts: _Layouts, rows: IntArray, hashes: IntArray, rank: IntArray
) -> tuple[IntArray, IntArray]:
    """(member, representative) for rows whose full signature equals a better-ranked row's.

    Only rows sharing a hash are compared, so this costs little; it keeps a flood of
    identical layouts (blank or placeholder images) from making the index quadratic. The
    representative is the best-ranked row of each identical set (the one that survives).
    """
    shared = rows[pd.Series(hashes).duplicated(keep=False).to_numpy()]
    empty = np.empty(0, dtype=np.int64)
    if len(shared) == 0:
        return empty, empty
    words = np.ascontiguousarray(layouts.words(shared))
    keys = words.view(np.dtype((np.void, words.shape[1] * 8))).ravel()
    _, label = np.unique(keys, return_inverse=True)
    groups = group_by_labels(label.ravel().astype(np.int64), rank[shared])
    member = groups.dropped
    return shared[member], shared[groups.survivor[member]]


def _photometric(
    layouts: _Layouts,
    rows: IntArray,
    found: tuple[IntArray, IntArray],
    max_rms: float,
    rule: PhotometricRule,
    threads: int,
) -> tuple[IntArray, IntArray, list[str], dict[str, Any]]:
    """Pairs :class:`PhotometricRule` adds to the layout pairs ``found`` (canonical rows):
    layout-DCT candidates within ``rule.radius`` and grey pHash candidates within
    ``rule.phash_radius`` that the layout check rejected."""
    dct, structure = layouts.dct_hashes(rows)
    grey = layouts.grey_phashes(rows)
    # every row within the loose radius; only structured rows within the wider one (the
    # structured branch needs both images structured), so flat images -- whose layout-DCT
    # hashes collide often -- never reach the wide search
    loose = hamming_pairs(dct, rule.loose_dct, threads=threads)
    wide = np.flatnonzero(structure >= rule.min_structure)
    structured = hamming_pairs(dct[wide], rule.structured_dct, threads=threads)
    by_grey = hamming_pairs(grey, rule.phash_radius, threads=threads)
    n = len(layouts.present)
    pos_a = np.concatenate([loose.left, wide[structured.left], by_grey.left])
    pos_b = np.concatenate([loose.right, wide[structured.right], by_grey.right])
    a, b = rows[pos_a], rows[pos_b]
    key = np.minimum(a, b) * n + np.maximum(a, b)
    _, first = np.unique(key, return_index=True)
    pos_a, pos_b, key = pos_a[first], pos_b[first], key[first]
    known = np.minimum(*found) * n + np.maximum(*found)
    fresh = ~np.isin(key, known)
    pos_a, pos_b = pos_a[fresh], pos_b[fresh]
    a, b = rows[pos_a], rows[pos_b]
    rms = layouts.distance(a, b, threads)
    new = rms > max_rms
    pos_a, pos_b, a, b, rms = pos_a[new], pos_b[new], a[new], b[new], rms[new]
    ham = np.bitwise_count(dct[pos_a] ^ dct[pos_b]).astype(np.int64)
    ham_grey = np.bitwise_count(grey[pos_a] ^ grey[pos_b]).astype(np.int64)
    la = layout_array(layouts.words(a))
    lb = layout_array(layouts.words(b))
    ok = photometric_match(la, lb, ham, ham_grey, rms, rule)
    a, b, ham, ham_grey, rms = a[ok], b[ok], ham[ok], ham_grey[ok], rms[ok]
    details = [
        f"dct hamming {h}, phash hamming {g}, layout rms {r:.2f}"
        for h, g, r in zip(ham, ham_grey, rms, strict=True)
    ]
    metrics = {
        "dct_radius": [rule.loose_dct, rule.structured_dct],
        "phash_radius": rule.phash_radius,
        "structured_rows": len(wide),
        "candidate_pairs": len(loose) + len(structured) + len(by_grey),
        "phash_candidate_pairs": len(by_grey),
        "verified_pairs": len(a),
    }
    return a, b, details, metrics


def _near(
    state: _State, radius: int, max_rms: float, threads: int, rule: PhotometricRule | None
) -> dict[str, Any]:
    t0 = time.perf_counter()
    layouts = _Layouts(state)
    rows = np.flatnonzero(state.alive & layouts.present).astype(np.int64)
    hashes, crop_hashes = layouts.phashes(rows)
    same, same_rep = _identical_layouts(layouts, rows, hashes, state.rank)
    unique = ~np.isin(rows, same)
    rows, hashes, crop_hashes = rows[unique], hashes[unique], crop_hashes[unique]
    t1 = time.perf_counter()
    pairs = aligned_hamming_pairs(hashes, crop_hashes, radius, threads=threads)
    t2 = time.perf_counter()
    a, b = rows[pairs.left], rows[pairs.right]
    rms = layouts.distance(a, b, threads)
    ok = rms <= max_rms
    a, b, ham, rms = a[ok], b[ok], pairs.distance[ok], rms[ok]
    t3 = time.perf_counter()
    describe = [f"hamming {h}, layout rms {r:.2f}" for h, r in zip(ham, rms, strict=True)]
    if rule is None:
        pa = pb = np.empty(0, dtype=np.int64)
        photo_details: list[str] = []
        photo_metrics: dict[str, Any] = {"enabled": False}
    else:
        pa, pb, photo_details, photo_metrics = _photometric(
            layouts, rows, (a, b), max_rms, rule, threads
        )
    t4 = time.perf_counter()
    left = np.concatenate([a, pa, same])
    right = np.concatenate([b, pb, same_rep])
    groups = components(len(state.df), left, right, state.rank)
    describe += photo_details
    describe += ["identical layout"] * len(same)
    dropped = groups.dropped
    state.drop(
        dropped,
        "near_duplicate",
        groups.survivor[dropped],
        _edge_details(state, groups, left, right, describe),
    )
    return {
        "radius": radius,
        "layout_max_rms": max_rms,
        "hashed": len(rows) + len(same),
        "identical_layouts": len(same),
        "bands": pairs.bands,
        "pairs_checked": pairs.candidates,
        "candidate_pairs": len(pairs),
        "verified_pairs": len(a),
        "groups": groups.count,
        "dropped": len(dropped),
        "seconds_hash": round(t1 - t0, 4),
        "seconds_index": round(t2 - t1, 4),
        "seconds_verify": round(t3 - t2, 4),
        "photometric": {**photo_metrics, "seconds": round(t4 - t3, 4)},
    }


def _captions(state: _State, near: bool, cfg: DedupeConfig) -> dict[str, Any]:
    rows = np.flatnonzero(state.alive).astype(np.int64)
    keys = caption_keys(state.column("caption")[rows].tolist())
    metrics: dict[str, Any] = {}
    if not near:
        labels = np.full(len(state.df), -1, dtype=np.int64)
        labels[rows] = caption_labels(keys)
        groups = group_by_labels(labels, state.rank)
        dropped = groups.dropped
        survivors = groups.survivor[dropped]
        details = [f"same caption as {state.ids[s]}" for s in survivors]
        state.drop(dropped, "duplicate_caption", survivors, details)
        return {"groups": groups.count, "dropped": len(dropped)}
    left, right, score = near_caption_pairs(keys, cfg.minhash_threshold, cfg.minhash_num_perm)
    a, b = rows[left], rows[right]
    groups = components(len(state.df), a, b, state.rank)
    describe = [f"jaccard {s:.2f}" for s in score]
    dropped = groups.dropped
    state.drop(
        dropped,
        "near_duplicate_caption",
        groups.survivor[dropped],
        _edge_details(state, groups, a, b, describe),
    )
    metrics.update({"pairs": len(left), "groups": groups.count, "dropped": len(dropped)})
    return metrics


def _semantic(
    state: _State, embeddings: tuple[Sequence[str], np.ndarray], cfg: DedupeConfig
) -> dict[str, Any]:
    ids, vectors = embeddings
    matrix = np.asarray(vectors)
    if matrix.ndim != 2 or len(matrix) != len(ids):
        raise InputDataError(
            f"dedupe embeddings: expected {len(ids)} rows of vectors, got shape {matrix.shape}"
        )
    position = pd.Series(np.arange(len(ids)), index=pd.Index(list(ids), dtype=object))
    if position.index.has_duplicates:
        raise InputDataError("dedupe embeddings: duplicate ids")
    rows = np.flatnonzero(state.alive).astype(np.int64)
    where = position.reindex(pd.Index(state.ids[rows], dtype=object))
    have = where.notna().to_numpy()
    rows = rows[have]
    emb = matrix[where.to_numpy()[have].astype(np.int64)]
    result = semantic_duplicates(
        emb, state.rank[rows], cfg.embedding_epsilon, cfg.embedding_clusters
    )
    dropped, survivors = rows[result.dropped], rows[result.duplicate_of]
    state.drop(
        dropped,
        "semantic_duplicate",
        survivors,
        [
            f"cosine {c:.3f} to {state.ids[s]}"
            for c, s in zip(result.cosine.tolist(), survivors.tolist(), strict=True)
        ],
    )
    return {
        "embedded_rows": len(rows),
        "missing_embeddings": int((~have).sum()),
        "clusters": result.clusters,
        "pairs_above": result.pairs_above,
        "dropped": len(dropped),
    }


def _take(df: pd.DataFrame, positions: IntArray) -> pd.DataFrame:
    """Rows at ``positions`` with a fresh RangeIndex (one copy, not two)."""
    out = df.take(positions)
    out.index = pd.RangeIndex(len(out))
    return out


def dedupe_frame(
    df: pd.DataFrame,
    cfg: DedupeConfig,
    embeddings: tuple[list[str], np.ndarray] | None = None,
) -> DedupeResult:
    """Dedupe the union of validated shard manifests (see module doc for the stages).

    ``df`` needs ``id`` plus the signature columns of the enabled stages (``img_sha256``,
    ``IMAGE_HASH_COLUMNS``) and ``caption``; ``width``, ``height`` and ``file_bytes`` feed
    the survivor rule. ``embeddings`` is ``(ids, vectors)`` for the optional semantic stage.
    """
    start = time.perf_counter()
    _check_columns(df, cfg)
    state = _State(df)
    metrics: dict[str, Any] = {"rows_in": len(df)}
    steps: list[tuple[str, bool]] = [
        ("exact", cfg.exact),
        ("near", cfg.near),
        ("captions", cfg.captions),
        ("near_captions", cfg.near_captions),
        ("semantic", cfg.embeddings and embeddings is not None),
    ]
    for name, enabled in steps:
        if not enabled:
            continue
        t = time.perf_counter()
        if name == "exact":
            stage = _exact(state)
        elif name == "near":
            stage = _near(
                state,
                cfg.phash_max_distance,
                cfg.near_layout_max_rms,
                resolve_threads(cfg.threads),
                PhotometricRule() if cfg.near_photometric else None,
            )
        elif name in ("captions", "near_captions"):
            stage = _captions(state, name == "near_captions", cfg)
        else:
            assert embeddings is not None
            stage = _semantic(state, embeddings, cfg)
        stage["seconds"] = round(time.perf_counter() - t, 4)
        metrics[name] = stage
    if cfg.embeddings and embeddings is None:
        metrics["semantic"] = {"skipped": "no embeddings given"}

    kept = _take(df, state.order[state.alive])
    gone = ~state.alive
    rejected = _take(df, state.order[gone])
    rejected["reason"] = state.reason[gone]
    rejected["detail"] = state.detail[gone]
    rejected["duplicate_of"] = state.duplicate_of[gone]
    rejected["stage"] = STAGE
    reasons = pd.Series(state.reason[gone], dtype=object).value_counts()
    counts = {str(r): int(reasons[r]) for r in REASONS if r in reasons.index}
    metrics["rows_out"] = len(kept)
    metrics["seconds"] = round(time.perf_counter() - start, 4)
    figures = DedupeMetrics.model_validate(metrics)  # the passes that ran, by name
    return DedupeResult(kept=kept, rejected=rejected, counts=counts, metrics=figures.to_json())
