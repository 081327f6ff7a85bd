"""The triggered retrain's data: the logged window as a manifest, merged with the champion's
training snapshot per ``monitor.retrain_data``.

A logged row becomes a manifest row when the sink stored its image (``image_uri``) and it has
a caption; every other row is counted under a reason, as are exact repeats of a pair already
taken (the same image bytes and caption requested again) and previous rows whose id the window
already holds. ``rows_in == rows_out + sum(rejected)`` holds for the window and for the merge.
The predicted ``label`` of a logged row is the model's own output, not ground truth: it is not
copied (window rows carry no label).

The champion's training snapshot is the curated manifest its register step recorded as the
version run's ``training`` dataset input (:func:`pairflow.stages.register.lineage.log_datasets`); a
path that KFP mounted in the step's pod (``/s3/``, ``/minio/``) is mapped back to its
``s3://`` URI, as ``kfp.dsl.types.artifact_types.convert_local_path_to_remote_path`` does.

The merged manifest, its rejected rows and a report go to
``<monitor.log_prefix>/retrain/<window slug>/``; the manifest's URI is the run's ``data.source``.
"""

from __future__ import annotations

import io
import json
import re
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pairflow.config import S3Config
from pairflow.data import s3 as s3io
from pairflow.data.schema import MANIFEST_COLUMNS, REJECT_COLUMNS, write_manifest
from pairflow.data.sources import load_source
from pairflow.errors import InputDataError, PairflowError
from pairflow.stages.monitor.verdict import WindowId

SERVED_SOURCE = "served"
STAGE = "monitor-snapshot"
# KFP v2 mounts remote artifacts in a step's pod under these prefixes (kfp 2.x
# dsl/types/artifact_types.py: _S3_LOCAL_MOUNT_PREFIX, _MINIO_LOCAL_MOUNT_PREFIX); MinIO
# speaks S3, so both map to s3:// (boto3 with data.s3.endpoint_url reaches either).
_KFP_MOUNTS = {"/s3/": "s3://", "/minio/": "s3://"}
_SLUG = re.compile(r"[^A-Za-z0-9._-]+")

RetrainData = Literal["window", "window+previous"]


class SnapshotError(PairflowError):
    """The retrain data cannot be assembled (no training snapshot recorded, unreadable, ...)."""


@dataclass(frozen=True)
class Snapshot:
    """Where the retrain data went and how every input row was accounted for."""

    uri: str  # the manifest: data.source of the triggered run
    rejected_uri: str
    report_uri: str
    rows: int
    window_rows_in: int
    window_rows_out: int
    previous_rows_in: int
    previous_rows_out: int
    previous_source: str
    retrain_data: str
    rejected: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def window_slug(window: WindowId) -> str:
    """A path-safe name of the window: ``<model>-v<version>-<start>-<end>`` (compact UTC)."""

    def compact(ts: str) -> str:
        return re.sub(r"[-:]", "", ts.split("+")[0].removesuffix("Z")).split(".")[0] + "Z"

    raw = (
        f"{window.model_name}-v{window.model_version}-{compact(window.start)}-{compact(window.end)}"
    )
    return _SLUG.sub("_", raw)


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def window_manifest(records: pa.Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Manifest rows from logged records, and the rows left out with their reasons."""
    cols = ["request_id", "instance", "image_sha256", "image_uri", "caption"]
    missing = [c for c in cols if c not in records.column_names]
    if missing:
        raise InputDataError(f"logged window: missing column(s) {', '.join(missing)}")
    rows = records.select(cols).to_pylist()
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    seen: dict[tuple[str, str], str] = {}
    for r in rows:
        row_id = f"{SERVED_SOURCE}-{r['request_id']}-{r['instance']}"
        entry = {"id": row_id, "image": r["image_uri"] or None, "caption": r["caption"]}
        entry.update(label=None, source=SERVED_SOURCE)
        reason, detail = "", ""
        if _blank(r["image_uri"]):
            reason, detail = "image_not_stored", "the sink stored no image bytes for this row"
        elif _blank(r["caption"]):
            reason, detail = "no_caption", "the request carried no caption"
        else:
            pair = (str(r["image_sha256"] or r["image_uri"]), str(r["caption"]).strip())
            if pair in seen:
                reason, detail = "repeated_pair", f"same image and caption as {seen[pair]}"
            else:
                seen[pair] = row_id
        if reason:
            rejected.append({**entry, "reason": reason, "detail": detail, "stage": STAGE})
        else:
            kept.append(entry)
    return _frame(kept, MANIFEST_COLUMNS), _frame(rejected, MANIFEST_COLUMNS + REJECT_COLUMNS)


def _frame(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(columns)).astype("object")


def remote_uri(path: str) -> str:
    """A KFP pod's mount path of a remote artifact as its ``s3://`` URI; others unchanged."""
    for prefix, scheme in _KFP_MOUNTS.items():
        if path.startswith(prefix):
            return scheme + path[len(prefix) :]
    if path.startswith("/gcs/"):
        raise SnapshotError(f"{path}: a GCS artifact (gs://); pairflow reads local paths and s3://")
    return path


def training_manifest_uri(tracking_uri: str, run_id: str, label: str) -> str:
    """The curated manifest that ``run_id`` (a registered version's run) trained on."""
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        run = MlflowClient(tracking_uri=tracking_uri).get_run(run_id)
    except MlflowException as exc:
        raise SnapshotError(f"{label}: cannot read run {run_id} ({exc})") from exc
    inputs = getattr(run, "inputs", None)
    for ds_input in getattr(inputs, "dataset_inputs", None) or []:
        contexts = {t.value for t in ds_input.tags if t.key == "mlflow.data.context"}
        if "training" not in contexts:
            continue
        try:
            uri = str(json.loads(ds_input.dataset.source)["uri"])
        except (ValueError, KeyError, TypeError) as exc:
            raise SnapshotError(
                f"{label}: run {run_id}'s training dataset has no readable source "
                f"({ds_input.dataset.source!r})"
            ) from exc
        return remote_uri(uri)
    raise SnapshotError(
        f"{label}: run {run_id} records no training dataset (register logs one); "
        "use monitor.retrain_data=window"
    )


def read_previous(uri: str, s3: S3Config | None) -> pd.DataFrame:
    """The champion's training manifest (manifest columns only)."""

    try:
        frame, _ = load_source(uri, "parquet", s3)
    except InputDataError as exc:
        raise SnapshotError(f"champion's training snapshot: {exc}") from exc
    return frame[list(MANIFEST_COLUMNS)].astype("object").reset_index(drop=True)


def merge(window: pd.DataFrame, previous: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Window rows first, then previous rows whose id the window does not hold."""
    if previous is None:
        return window, _frame([], MANIFEST_COLUMNS + REJECT_COLUMNS)
    clash = previous["id"].isin(set(window["id"]))
    dropped = previous[clash].copy()
    dropped["reason"] = "id_in_window"
    dropped["detail"] = "the logged window holds a row with this id"
    dropped["stage"] = STAGE
    merged = pd.concat([window, previous[~clash]], ignore_index=True)
    return merged, dropped.reset_index(drop=True)


def _is_local(prefix: str) -> bool:
    return not s3io.is_s3_uri(prefix)


def _write_parquet(frame: pd.DataFrame, uri: str, s3: S3Config | None) -> str:
    if _is_local(uri):
        return str(write_manifest(frame, uri).resolve())
    with tempfile.TemporaryDirectory(prefix="pairflow-snapshot-") as tmp:
        local = write_manifest(frame, Path(tmp) / "part.parquet")
        return s3io.upload_file(local, uri, s3)


def _write_text(text: str, uri: str, s3: S3Config | None) -> str:
    if _is_local(uri):
        path = Path(uri)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path.resolve())
    return s3io.put_bytes(uri, text.encode(), s3)


def build_snapshot(
    records: pa.Table,
    window: WindowId,
    *,
    log_prefix: str,
    retrain_data: RetrainData,
    s3: S3Config | None = None,
    previous_uri: str = "",
) -> Snapshot:
    """Write the retrain manifest for ``window`` and return where it is, with the counts.

    ``previous_uri`` (the champion's training manifest) is required with ``window+previous``.
    """
    if not log_prefix:
        raise SnapshotError("monitor.log_prefix: empty; the retrain data is written under it")
    if retrain_data == "window+previous" and not previous_uri:
        raise SnapshotError("monitor.retrain_data=window+previous: no previous training snapshot")
    kept, rejected = window_manifest(records)
    previous = read_previous(previous_uri, s3) if retrain_data == "window+previous" else None
    merged, clashes = merge(kept, previous)
    if merged.empty:
        raise SnapshotError(
            f"window {window.key}: no usable rows for a retrain ({len(records)} logged, "
            f"left out: {_counts(rejected) or 'none'})"
        )
    all_rejected = pd.concat([rejected, clashes], ignore_index=True)
    base = log_prefix.rstrip("/")
    if _is_local(base):
        base = str(Path(base).expanduser().resolve())
    folder = f"{base}/retrain/{window_slug(window)}"
    counts = _counts(all_rejected)
    window_in = len(records)
    prev_in = 0 if previous is None else len(previous)
    if window_in + prev_in != len(merged) + sum(counts.values()):
        raise SnapshotError(
            f"window {window.key}: {window_in + prev_in} rows in != {len(merged)} out + "
            f"{sum(counts.values())} left out"
        )
    report = {
        "stage": STAGE,
        "window": window.key,
        "retrain_data": retrain_data,
        "rows_in": window_in + prev_in,
        "rows_out": len(merged),
        "rejected": counts,
        "previous_source": previous_uri if previous is not None else "",
    }
    uri = _write_parquet(merged, f"{folder}/manifest.parquet", s3)
    rejected_uri = _write_parquet(all_rejected, f"{folder}/rejected.parquet", s3)
    report_uri = _write_text(json.dumps(report, indent=2), f"{folder}/report.json", s3)
    return Snapshot(
        uri=uri,
        rejected_uri=rejected_uri,
        report_uri=report_uri,
        rows=len(merged),
        window_rows_in=window_in,
        window_rows_out=len(kept),
        previous_rows_in=prev_in,
        previous_rows_out=prev_in - len(clashes),
        previous_source=previous_uri if previous is not None else "",
        retrain_data=retrain_data,
        rejected=counts,
    )


def _counts(frame: pd.DataFrame) -> dict[str, int]:
    if frame.empty:
        return {}
    return {str(k): int(v) for k, v in frame["reason"].value_counts().sort_index().items()}


def read_snapshot_manifest(uri: str, s3: S3Config | None = None) -> pd.DataFrame:
    """Read back a snapshot manifest (local path or s3://), for checks and the demo summary."""

    source = uri if _is_local(uri) else io.BytesIO(s3io.get_bytes(uri, s3))
    frame: pd.DataFrame = pq.read_table(source).to_pandas()
    return frame
