"""Which source rows can be pairs (ingest's rules, shared by every standalone stage CLI).

Reasons (one per rejected row, checked in this order):

- ``missing_id``: id null or blank;
- ``missing_image_ref``: image null or blank (e.g. a caption file with no image next to it);
- ``unsafe_image_path``: a relative image reference that climbs out of the manifest's directory
  (``../../etc/passwd``);
- ``caption_not_utf8`` / ``label_not_utf8``: a ``.txt``/``.cls`` sidecar that is not UTF-8;
- ``unreadable_sidecar``: a sidecar that could not be read;
- ``duplicate_id``: an id already kept earlier in source order (the first valid one is kept).

Image files are not opened here; validate checks that they exist and decode.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from pairflow.data.schema import empty_rejected, rejected_frame
from pairflow.data.sources import PROBLEM_COLUMN

STAGE = "ingest"
# Problems the readers report as "<code>: <detail>"; the first code names the reject reason.
PROBLEM_CODES = frozenset(
    {"unsafe_image_path", "caption_not_utf8", "label_not_utf8", "unreadable_sidecar"}
)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value) or not str(value).strip()


def split_rejects(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, int]]:
    """Split source rows into (kept, rejected with reason/detail/stage, reason counts)."""
    problems = df[PROBLEM_COLUMN] if PROBLEM_COLUMN in df.columns else pd.Series([None] * len(df))
    first_seen: dict[str, int] = {}
    keep: list[bool] = []
    reasons: list[str] = []
    details: list[str] = []
    for pos, (row_id, image, problem) in enumerate(
        zip(df["id"].tolist(), df["image"].tolist(), problems.tolist(), strict=True)
    ):
        reason = detail = None
        if _blank(row_id):
            reason, detail = "missing_id", f"row {pos}: id is empty (image={image!r})"
        elif _blank(image):
            reason, detail = "missing_image_ref", f"id {row_id!r}: no image file or reference"
        elif not _blank(problem):
            code, sep, text = str(problem).partition(": ")
            if sep and code in PROBLEM_CODES:
                reason, detail = code, f"id {row_id!r}: {text}"
            else:
                reason, detail = "unreadable_sidecar", f"id {row_id!r}: {problem}"
        elif row_id in first_seen:
            reason = "duplicate_id"
            detail = f"id {row_id!r} repeats row {first_seen[row_id]} (first kept)"
        else:
            first_seen[row_id] = pos
        keep.append(reason is None)
        if reason is not None and detail is not None:
            reasons.append(reason)
            details.append(detail)
    mask = pd.Series(keep, index=df.index, dtype=bool)
    body = df.drop(columns=[PROBLEM_COLUMN], errors="ignore")
    kept = body[mask].reset_index(drop=True)
    if reasons:
        rejected = rejected_frame(body[~mask], reasons, details, stage=STAGE)
    else:
        rejected = empty_rejected(list(body.columns))
    return kept, rejected, dict(Counter(reasons))
