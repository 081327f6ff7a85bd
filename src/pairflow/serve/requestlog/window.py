"""Read a window of logged traffic: the Parquet parts the sink wrote, filtered on time.

The sink (``pairflow monitor-sink``) writes each row into the partition of its own
timestamp, ``<prefix>/dt=YYYY-MM-DD/hour=HH/part-<uuid>.parquet``, so the parts of the
hours overlapping ``[start, end)`` hold every row of the window; rows outside it are cut on
``ts``. ``prefix`` is an ``s3://`` prefix (boto3, endpoint from :class:`S3Config`) or a
local folder.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pairflow.config import S3Config
from pairflow.data import s3 as s3io
from pairflow.errors import InputDataError
from pairflow.serve.requestlog.records import META_KEY, RECORD_FORMAT, schema

PART_PREFIX = "part-"
PART_SUFFIX = ".parquet"
# Hours listed at most by one read (a year of hourly partitions); a longer window is a mistake.
MAX_HOURS = 24 * 366


def partition_dir(ts: datetime) -> str:
    """The partition path of a row logged at ``ts`` (UTC): ``dt=YYYY-MM-DD/hour=HH``."""
    ts = ts.astimezone(UTC)
    return f"dt={ts:%Y-%m-%d}/hour={ts:%H}"


def partition_dirs(start: datetime, end: datetime) -> list[str]:
    """Partition paths of every hour overlapping ``[start, end)``, oldest first."""
    _check_window(start, end)
    hour = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    out: list[str] = []
    while hour < end:
        out.append(partition_dir(hour))
        hour += timedelta(hours=1)
    return out


def read_window(
    prefix: str,
    start: datetime,
    end: datetime,
    s3: S3Config | None = None,
    *,
    dim: int = 0,
    model_version: str | None = None,
) -> pa.Table:
    """Logged records with ``start <= ts < end`` under ``prefix`` (a table in the
    :func:`pairflow.serve.requestlog.records.schema`; sorted by ``ts``, then ``request_id``,
    ``instance``).

    ``start``/``end`` must be timezone-aware. With no rows, the result is an empty table whose
    embedding width is ``dim``. Parts of different embedding widths (a model change inside the
    window) are an error naming them: a window is judged against one model's reference;
    ``model_version`` keeps only that version's rows (read before the width check).
    """
    dirs = partition_dirs(start, end)
    base = prefix.rstrip("/")
    tables: list[tuple[str, pa.Table]] = []
    for d in dirs:
        for uri, data in _parts(f"{base}/{d}", s3):
            table = _read_part(uri, data)
            ts = table.column("ts")
            mask = pc.and_(
                pc.greater_equal(ts, pa.scalar(start, ts.type)),
                pc.less(ts, pa.scalar(end, ts.type)),
            )
            if model_version is not None:
                mask = pc.and_(mask, pc.equal(table.column("model_version"), model_version))
            table = table.filter(mask)
            if table.num_rows:
                tables.append((uri, table))
    if not tables:
        return schema(dim).empty_table()
    dims = {uri: _dim(t.schema) for uri, t in tables}
    if len(set(dims.values())) > 1:
        listing = ", ".join(f"{uri} (dim {d})" for uri, d in dims.items())
        raise InputDataError(
            f"{base}: the window {start.isoformat()}..{end.isoformat()} mixes embedding widths: "
            f"{listing}; read a window served by one model"
        )
    out = pa.concat_tables([t for _, t in tables])
    return out.sort_by(
        [("ts", "ascending"), ("request_id", "ascending"), ("instance", "ascending")]
    )


def _check_window(start: datetime, end: datetime) -> None:
    for name, value in (("start", start), ("end", end)):
        if value.tzinfo is None or value.utcoffset() is None:
            raise InputDataError(f"window {name} {value.isoformat()}: needs a timezone (use UTC)")
    if end <= start:
        raise InputDataError(
            f"window {start.isoformat()}..{end.isoformat()}: end must be after start"
        )
    if end - start > timedelta(hours=MAX_HOURS):
        raise InputDataError(
            f"window {start.isoformat()}..{end.isoformat()}: longer than {MAX_HOURS} hours"
        )


def _parts(partition: str, s3: S3Config | None) -> list[tuple[str, bytes]]:
    if s3io.is_s3_uri(partition):
        bucket, _ = s3io.parse_s3_uri(partition)
        keys = _list_s3(partition, s3)
        names = [k for k in keys if _is_part(k.rsplit("/", 1)[-1])]
        return [(s3io.s3_uri(bucket, k), s3io.get_bytes(s3io.s3_uri(bucket, k), s3)) for k in names]
    folder = Path(partition)
    if not folder.is_dir():
        return []
    return [(str(p), p.read_bytes()) for p in sorted(folder.iterdir()) if _is_part(p.name)]


def _list_s3(partition: str, s3: S3Config | None) -> list[str]:
    try:
        return s3io.list_keys(partition, s3)
    except s3io.S3NotFound as exc:
        raise InputDataError(f"{partition}: cannot list the logged window ({exc})") from exc


def _is_part(name: str) -> bool:
    return name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)


def _read_part(uri: str, data: bytes) -> pa.Table:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, OSError) as exc:
        raise InputDataError(f"{uri}: not a readable Parquet part ({exc})") from exc
    meta = (table.schema.metadata or {}).get(META_KEY)
    if meta is None:
        raise InputDataError(f"{uri}: not a request-log part (no {META_KEY.decode()} metadata)")
    try:
        fmt = json.loads(meta).get("format")
    except ValueError as exc:
        raise InputDataError(f"{uri}: unreadable {META_KEY.decode()} metadata ({exc})") from exc
    if fmt != RECORD_FORMAT:
        raise InputDataError(f"{uri}: record format {fmt!r}, expected {RECORD_FORMAT!r}")
    dim = json.loads(meta).get("dim")
    if not isinstance(dim, int) or dim < 0:
        raise InputDataError(f"{uri}: {META_KEY.decode()} metadata has no embedding width")
    sch = schema(dim)
    missing = [f.name for f in sch if f.name not in table.schema.names]
    if missing:
        raise InputDataError(f"{uri}: missing record columns {missing}")
    try:
        # Embeddings are stored as plain lists (see sink_store.storable); back to fixed width.
        return table.select(sch.names).cast(sch)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputDataError(f"{uri}: columns do not match the record schema ({exc})") from exc


def _dim(sch: pa.Schema) -> int:
    return int(sch.field("image_emb").type.list_size)
