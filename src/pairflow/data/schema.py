"""The manifest schema shared by every stage, and its Parquet/JSONL readers and writers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pairflow.errors import InputDataError

REQUIRED_COLUMNS: tuple[str, ...] = ("id", "image", "caption")
OPTIONAL_COLUMNS: tuple[str, ...] = ("label", "source")
MANIFEST_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
REJECT_COLUMNS: tuple[str, ...] = ("reason", "detail", "stage")

MANIFEST_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("image", pa.string()),
        ("caption", pa.string()),
        ("label", pa.string()),
        ("source", pa.string()),
    ]
)


def check_columns(df: pd.DataFrame, origin: str) -> None:
    """Raise an :class:`InputDataError` naming ``origin`` when required columns are missing."""
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise InputDataError(
            f"{origin}: missing required column(s) {', '.join(missing)} "
            f"(found: {', '.join(map(str, df.columns)) or 'none'})"
        )


def normalize_manifest(df: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Return ``df`` with the manifest columns in order and string dtypes; extra columns kept."""
    check_columns(df, origin)
    out = df.copy()
    for col in OPTIONAL_COLUMNS:
        if col not in out.columns:
            out[col] = None
    for col in MANIFEST_COLUMNS:
        out[col] = out[col].map(lambda v: None if _is_missing(v) else str(v)).astype("object")
    extra = [c for c in out.columns if c not in MANIFEST_COLUMNS]
    return out[list(MANIFEST_COLUMNS) + extra].reset_index(drop=True)


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    try:
        return bool(pd.isna(value))  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return False


def read_manifest(path: str | Path) -> pd.DataFrame:
    """Read a Parquet or JSONL manifest; errors name the file and the problem."""
    p = Path(path)
    if not p.exists():
        raise InputDataError(f"{p}: manifest not found")
    if p.is_dir():
        raise InputDataError(f"{p}: is a directory, expected a .parquet or .jsonl manifest")
    suffix = p.suffix.lower()
    try:
        if suffix in {".jsonl", ".json", ".ndjson"}:
            df = pd.read_json(p, lines=True, dtype=False)
        else:
            df = pq.read_table(p).to_pandas()
    except (OSError, ValueError, pa.ArrowException) as exc:
        kind = "JSONL" if suffix in {".jsonl", ".json", ".ndjson"} else "Parquet"
        raise InputDataError(f"{p}: unreadable {kind} manifest ({exc})") from exc
    return normalize_manifest(df, str(p))


def write_manifest(df: pd.DataFrame, path: str | Path) -> Path:
    """Write a manifest (or a rejected table) as Parquet, creating parent directories."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = df.reset_index(drop=True)
    # Manifest and reject columns are strings even when every value is null, so shards and
    # stages always agree on the schema.
    fields = [
        pa.field(str(c), pa.string())
        if c in MANIFEST_COLUMNS or c in REJECT_COLUMNS
        else pa.Schema.from_pandas(frame[[c]], preserve_index=False).field(0)
        for c in frame.columns
    ]
    table = pa.Table.from_pandas(frame, schema=pa.schema(fields), preserve_index=False)
    pq.write_table(table, out)
    return out


def rejected_frame(
    rows: pd.DataFrame, reasons: list[str], details: list[str], stage: str
) -> pd.DataFrame:
    """Attach ``reason``/``detail``/``stage`` columns to rejected rows."""
    out = rows.copy().reset_index(drop=True)
    out["reason"] = reasons
    out["detail"] = details
    out["stage"] = stage
    return out


def empty_rejected(columns: list[str] | None = None) -> pd.DataFrame:
    cols = list(columns or MANIFEST_COLUMNS) + list(REJECT_COLUMNS)
    return pd.DataFrame({c: pd.Series(dtype="object") for c in cols})
