"""Duplicate groups (connected components over pairs) and deterministic survivors.

Survivor rule, applied inside every group by every stage: the row with the most pixels
(``width * height``) survives; ties go to the larger file (less compression, a proxy for
quality); remaining ties to the lowest ``id``. :func:`survivor_rank` turns that rule into
one integer per row (0 = best), so stages compare plain integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

__all__ = ["Groups", "components", "group_by_labels", "survivor_rank"]

IntArray = npt.NDArray[np.int64]


def _numeric(df: pd.DataFrame, column: str) -> npt.NDArray[np.float64]:
    if column not in df.columns:
        return np.zeros(len(df), dtype=np.float64)
    values = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64, na_value=0.0)
    out: npt.NDArray[np.float64] = np.nan_to_num(values, nan=0.0)
    return out


def survivor_rank(df: pd.DataFrame, order: IntArray) -> IntArray:
    """Rank under the survivor rule of the rows ``df.iloc[order]`` (``order``: by id).

    Missing ``width``/``height``/``file_bytes`` count as 0, so the rule falls back to id.
    """
    pixels = (_numeric(df, "width") * _numeric(df, "height"))[order]
    size = _numeric(df, "file_bytes")[order]
    position = np.arange(len(order), dtype=np.int64)  # canonical rows are in id order
    order = np.lexsort((position, -size, -pixels))
    rank = np.empty(len(df), dtype=np.int64)
    rank[order] = position
    return rank


@dataclass(frozen=True)
class Groups:
    """Duplicate groups over ``n`` rows.

    ``survivor[i]`` is the row that survives ``i``'s group (``i`` itself for survivors and
    for rows in no group); ``count`` is the number of groups with two or more rows.
    """

    survivor: IntArray
    count: int

    @property
    def dropped(self) -> IntArray:
        """Rows that lose to another row of their group, ascending."""
        return np.flatnonzero(self.survivor != np.arange(len(self.survivor))).astype(np.int64)


def group_by_labels(labels: IntArray, rank: IntArray) -> Groups:
    """Groups of rows sharing a label (label < 0: in no group); best ``rank`` survives."""
    n = len(labels)
    survivor = np.arange(n, dtype=np.int64)
    member = np.flatnonzero(labels >= 0)
    if len(member) == 0:
        return Groups(survivor, 0)
    lab = labels[member]
    order = member[np.lexsort((rank[member], lab))]
    sorted_lab = labels[order]
    starts = np.flatnonzero(np.r_[True, sorted_lab[1:] != sorted_lab[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    best = np.repeat(order[starts], sizes)
    survivor[order] = best
    return Groups(survivor, int((sizes > 1).sum()))


def components(n: int, left: IntArray, right: IntArray, rank: IntArray) -> Groups:
    """Connected components of the graph with edges ``(left[k], right[k])`` over ``n`` rows."""
    if len(left) == 0:
        return Groups(np.arange(n, dtype=np.int64), 0)
    ones = np.ones(len(left), dtype=np.int8)
    graph = coo_matrix((ones, (left, right)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=False)
    return group_by_labels(labels.astype(np.int64), rank)
