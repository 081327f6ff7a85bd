"""Non-finite model outputs: which rows of which output hold a NaN or an infinity.

A diverged model (NaN weights) produces NaN embeddings; metrics computed over them are
meaningless, so the gate fails the candidate and names the count and the rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from pairflow.stages.evaluate.retrieval import nonfinite_rows
from pairflow.stages.evaluate.scoring import HoldoutScores

Finding = tuple[str, int, int, list[str]]


def nonfinite_outputs(
    scores: HoldoutScores, ids: Sequence[str], class_names: Sequence[str], who: str = "candidate"
) -> list[Finding]:
    """(what, bad rows, rows checked, bad ids) per output with a non-finite value.

    Image embeddings are checked on the rows whose image was read (``scores.ok``); text
    embeddings and logits on every held-out row; label-prompt embeddings per class.
    """
    ok = np.asarray(scores.ok, dtype=bool)
    row_ids = np.asarray([str(i) for i in ids], dtype=object)
    found: list[Finding] = []
    parts: list[tuple[str, np.ndarray | None, np.ndarray]] = [
        ("image embeddings", scores.image[ok], row_ids[ok]),
        ("text embeddings", scores.text, row_ids),
        ("logits", scores.logits, row_ids),
        (
            "label-prompt embeddings",
            scores.prompts,
            np.asarray([str(c) for c in class_names], dtype=object),
        ),
    ]
    for what, values, names in parts:
        if values is None or len(values) == 0:
            continue
        bad = nonfinite_rows(values)
        if bad.size:
            label = [str(names[i]) if i < len(names) else f"#{i}" for i in bad]
            found.append((f"{who} {what}", int(bad.size), len(values), label))
    return found
