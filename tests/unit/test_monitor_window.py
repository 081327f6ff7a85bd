"""Window reader over parts written by the sink's store: local folder and S3 (moto)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from pairflow.config import S3Config
from pairflow.data import s3 as s3io
from pairflow.errors import InputDataError
from pairflow.serve.requestlog.records import schema, to_table
from pairflow.serve.requestlog.sink_store import storable, write_parts
from pairflow.serve.requestlog.window import partition_dirs, read_window

T0 = datetime(2026, 3, 1, 22, 30, tzinfo=UTC)


def _rows(times: list[datetime], dim: int = 4, version: str = "3") -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    return [
        {
            "request_id": f"r{i}",
            "instance": 0,
            "ts": t,
            "model_name": "clip",
            "model_version": version,
            "task": "score",
            "image_sha256": f"{i:064x}",
            "caption": f"caption {i}",
            "score": float(i) / 10,
            "image_emb": rng.standard_normal(dim),
            "text_emb": None,
        }
        for i, t in enumerate(times)
    ]


def test_partitions_cover_every_overlapping_hour_across_midnight() -> None:
    dirs = partition_dirs(T0, T0 + timedelta(hours=2))
    assert dirs == ["dt=2026-03-01/hour=22", "dt=2026-03-01/hour=23", "dt=2026-03-02/hour=00"]
    assert partition_dirs(T0.replace(minute=0), T0.replace(minute=0) + timedelta(hours=1)) == [
        "dt=2026-03-01/hour=22"
    ]


def test_rows_are_partitioned_by_their_own_hour_and_cut_on_ts(tmp_path: Path) -> None:
    times = [T0 + timedelta(minutes=m) for m in (-40, 0, 29, 31, 95)]  # 21:50 .. 00:05
    uris = write_parts(str(tmp_path), to_table(_rows(times), 4))
    assert sorted(Path(u).parent.relative_to(tmp_path).as_posix() for u in uris) == [
        "dt=2026-03-01/hour=21",
        "dt=2026-03-01/hour=22",
        "dt=2026-03-01/hour=23",
        "dt=2026-03-02/hour=00",
    ]
    got = read_window(str(tmp_path), T0, T0 + timedelta(minutes=31))
    # 22:30 inclusive, 22:59 in, 23:01 out (end exclusive at 23:01), 21:50 before start.
    assert got.column("request_id").to_pylist() == ["r1", "r2"]
    assert got.schema.field("image_emb").type == schema(4).field("image_emb").type
    emb = np.asarray(got.column("image_emb").to_pylist()[0], dtype=np.float16)
    np.testing.assert_array_equal(emb, np.asarray(_rows(times)[1]["image_emb"], np.float16))
    whole = read_window(str(tmp_path), T0 - timedelta(hours=1), T0 + timedelta(hours=2))
    assert whole.column("request_id").to_pylist() == ["r0", "r1", "r2", "r3", "r4"]


def test_empty_window_has_the_schema(tmp_path: Path) -> None:
    got = read_window(str(tmp_path / "nothing"), T0, T0 + timedelta(hours=1), dim=8)
    assert got.num_rows == 0
    assert got.schema.equals(schema(8), check_metadata=True)


def test_bad_windows_and_parts_are_named(tmp_path: Path) -> None:
    with pytest.raises(InputDataError, match="needs a timezone"):
        read_window(str(tmp_path), T0.replace(tzinfo=None), T0 + timedelta(hours=1))
    with pytest.raises(InputDataError, match="end must be after start"):
        read_window(str(tmp_path), T0, T0)
    part = tmp_path / "dt=2026-03-01" / "hour=22" / "part-x.parquet"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"not parquet")
    with pytest.raises(InputDataError, match=r"part-x\.parquet: not a readable Parquet part"):
        read_window(str(tmp_path), T0, T0 + timedelta(hours=1))
    pq.write_table(storable(to_table(_rows([T0]), 4)).replace_schema_metadata({}), part)
    with pytest.raises(InputDataError, match="not a request-log part"):
        read_window(str(tmp_path), T0, T0 + timedelta(hours=1))


def test_mixed_embedding_widths_are_refused(tmp_path: Path) -> None:
    write_parts(str(tmp_path), to_table(_rows([T0], dim=4), 4))
    write_parts(str(tmp_path), to_table(_rows([T0 + timedelta(minutes=1)], 8, "4"), 8))
    with pytest.raises(InputDataError, match="mixes embedding widths"):
        read_window(str(tmp_path), T0, T0 + timedelta(hours=1))
    # one model's rows: the other version's parts are left out before the width check
    got = read_window(str(tmp_path), T0, T0 + timedelta(hours=1), model_version="4")
    assert got.column("model_version").to_pylist() == ["4"]
    assert got.schema.field("image_emb").type.list_size == 8
    got = read_window(str(tmp_path), T0, T0 + timedelta(hours=1), model_version="3")
    assert got.num_rows == 1 and got.schema.field("image_emb").type.list_size == 4


def test_s3_prefix_round_trip(s3_bucket: str, s3_config: S3Config) -> None:
    prefix = s3io.s3_uri(s3_bucket, "logs/clip")
    times = [T0 + timedelta(minutes=m) for m in (0, 45)]
    uris = write_parts(prefix, to_table(_rows(times), 4), s3_config)
    assert all(u.startswith(prefix + "/dt=2026-03-0") for u in uris)
    got = read_window(prefix, T0, T0 + timedelta(hours=1), s3_config)
    assert got.column("request_id").to_pylist() == ["r0", "r1"]
    assert got.column("score").to_pylist() == pytest.approx([0.0, 0.1])
    assert (
        read_window(prefix, T0 + timedelta(days=1), T0 + timedelta(days=2), s3_config).num_rows == 0
    )
