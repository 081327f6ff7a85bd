"""The replayer: held-out pairs sent as predictor requests while a canary step bakes.

Rows come from the manifest's held-out split (:func:`pairflow.data.split.split_holdout`), the
rows train never saw. Each becomes one request (:func:`pair_request`): a ranking request by
default, the row's image with its own caption among ``candidates - 1`` other held-out
captions (the true one at a position that varies by row), so each model's top-1 caption can
be checked against the reference and compared between the two models on the same request;
or, with ``task='classify'``, the image (with its caption, which a fusion classifier reads)
and the row's label as reference. Requests
carry the row's key and reference in ``X-Pairflow-Key`` / ``X-Pairflow-Reference`` headers
(the router records them). They are sent at a fixed rate with bounded concurrency, cycling
through the rows, and every client outcome is counted so a test can assert that no client
request failed.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pandas as pd
from PIL import Image

from pairflow.config import SplitConfig
from pairflow.data.split import split_frame
from pairflow.errors import InputDataError

log = logging.getLogger("pairflow.stages.deploy.replay")

RequestBuilder = Callable[[dict[str, Any]], dict[str, Any]]


def encode_image(path: str, px: int) -> str:
    """The image at ``path`` resized to ``px`` x ``px``, as base64 PNG."""

    # lazy: boto3, botocore (slow to import); only this path needs it
    from pairflow.data.imageio import read_image_bytes

    try:
        with Image.open(io.BytesIO(read_image_bytes(path))) as img:
            small = img.convert("RGB").resize((px, px))
    except (OSError, ValueError, InputDataError) as exc:
        raise InputDataError(f"replay image {path}: cannot be read ({exc})") from exc
    buf = io.BytesIO()
    small.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def pair_request(row: dict[str, Any]) -> dict[str, Any]:
    """A V1 request (``pairflow serve``'s protocol) for one row (image base64): ranking of
    the row's ``captions`` when it has several, classify for ``task='classify'``, else one
    pair scored."""
    if row.get("task") == "classify":
        # the caption goes along: a fusion classifier (train.model=classifier) classifies the
        # image-caption pair; a CLIP classifies the image zero-shot and ignores it
        instance = {"image": row["image_b64"], "caption": str(row["caption"])}
        return {"task": "classify", "instances": [instance]}
    captions = row.get("captions") or [str(row["caption"])]
    return {
        "task": "score",
        "instances": [{"image": row["image_b64"], "caption": str(c)} for c in captions],
    }


def request_headers(row: dict[str, Any]) -> dict[str, str]:
    """The row's key and reference answer, for the router's paired comparison."""
    # lazy: scipy (slow to import); only this path needs it
    from pairflow.stages.deploy.router import KEY_HEADER, REFERENCE_HEADER

    headers = {KEY_HEADER: str(row.get("key", row.get("id", "")))}
    if row.get("reference") is not None:
        headers[REFERENCE_HEADER] = str(row["reference"])
    return headers


def attach_references(
    pairs: list[dict[str, Any]], candidates: int, task: str, variants: int = 1
) -> list[dict[str, Any]]:
    """Every row with its request shape, key and reference answer.

    ``rank``: ``variants`` requests per row, each the row's caption plus ``candidates - 1``
    distinct captions of other rows (a different set per variant), the true one at a
    position that varies (reference = that position; key ``id#variant``). Requests sharing
    an image are distinct requests, not distinct images: the paired comparison counts
    requests. ``classify``: one request per row, reference = the row's label.
    """
    if task == "classify":
        out = []
        for row in pairs:
            label = row.get("label")
            ref = None if label is None or label != label else str(label)
            out.append({**row, "task": "classify", "reference": ref, "key": str(row["id"])})
        return out
    if candidates < 2:
        return [{**row, "key": str(row["id"])} for row in pairs]
    n = len(pairs)
    out = []
    for v in range(variants):
        for i, row in enumerate(pairs):
            own = str(row["caption"])
            others: list[str] = []
            j = i + 1 + v * (candidates - 1)
            while len(others) < candidates - 1 and j < i + 1 + v * (candidates - 1) + n:
                text = str(pairs[j % n]["caption"])
                if text != own and text not in others:
                    others.append(text)
                j += 1
            if not others:
                out.append({**row, "key": f"{row['id']}#{v}"})
                continue
            pos = (i + v) % (len(others) + 1)
            captions = [*others[:pos], own, *others[pos:]]
            out.append(
                {**row, "captions": captions, "reference": str(pos), "key": f"{row['id']}#{v}"}
            )
    return out


def _resolve(uri: str, base: Path | None) -> str:
    """Image URIs relative to the manifest (before ingest resolved them) become absolute."""
    if base is None or "://" in uri or Path(uri).is_absolute():
        return uri
    return str((base / uri).resolve())


def load_pairs(
    frame: pd.DataFrame, px: int, limit: int = 256, base: Path | None = None
) -> list[dict[str, Any]]:
    """Up to ``limit`` rows with their images encoded once.

    Rows serve would refuse (empty caption) or whose image cannot be read are skipped.
    """
    pairs: list[dict[str, Any]] = []
    for raw in frame.head(limit * 2).to_dict("records"):
        row = {str(k): v for k, v in raw.items()}
        caption = row.get("caption")
        if not isinstance(caption, str) or not caption.strip():
            # serve answers 400 to an empty caption: such a row tests nothing about the model
            log.warning("replay: skipping row %s: empty or missing caption", row.get("id"))
            continue
        try:
            row["image_b64"] = encode_image(_resolve(str(row["image"]), base), px)
        except InputDataError as exc:
            log.warning("replay: skipping row %s: %s", row.get("id"), exc)
            continue
        pairs.append(row)
        if len(pairs) >= limit:
            break
    if not pairs:
        raise InputDataError("replay: no held-out row with a readable image to send")
    return pairs


def holdout_pairs(
    manifest: str | Path,
    split: SplitConfig,
    px: int,
    candidates: int = 1,
    task: str = "rank",
    variants: int = 1,
) -> list[dict[str, Any]]:
    """The held-out rows of ``manifest`` (``data.split``: the rows evaluate measured) ready to
    replay (all rows when none is held out), with their references (:func:`attach_references`)."""
    # lazy: pyarrow (slow to import); only this path needs it
    from pairflow.data.schema import read_manifest

    frame = read_manifest(manifest)
    _, held = split_frame(frame, split)
    if held.empty:
        log.warning("replay: no held-out rows in %s; replaying all %d rows", manifest, len(frame))
        held = frame
    pairs = load_pairs(held, px, base=Path(manifest).parent)
    return attach_references(pairs, candidates, task, variants)


@dataclass
class ReplayStats:
    """Client-side view of a replay: what was sent and how each request ended."""

    sent: int = 0
    ok: int = 0
    failed: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)

    def add(self, other: ReplayStats) -> None:
        self.sent += other.sent
        self.ok += other.ok
        self.failed += other.failed
        for k, v in other.statuses.items():
            self.statuses[k] = self.statuses.get(k, 0) + v
        self.errors.extend(other.errors[:20])


async def replay(
    url: str,
    pairs: list[dict[str, Any]],
    seconds: float,
    *,
    path: str,
    rate_per_s: float,
    concurrency: int,
    timeout_s: float,
    build: RequestBuilder = pair_request,
    start_index: int = 0,
) -> ReplayStats:
    """POST ``build(pair)`` to ``url + path`` at ``rate_per_s`` for ``seconds``."""
    stats = ReplayStats()
    sem = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    tasks: list[asyncio.Task[None]] = []

    async def one(
        session: aiohttp.ClientSession, body: dict[str, Any], headers: dict[str, str]
    ) -> None:
        try:
            async with session.post(url.rstrip("/") + path, json=body, headers=headers) as resp:
                await resp.read()
                stats.statuses[resp.status] = stats.statuses.get(resp.status, 0) + 1
                if resp.status < 400:
                    stats.ok += 1
                else:
                    stats.failed += 1
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            stats.failed += 1
            stats.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            sem.release()

    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.monotonic()
        i = start_index
        while time.monotonic() - start < seconds:
            await sem.acquire()
            row = pairs[i % len(pairs)]
            body = build(row)
            i += 1
            stats.sent += 1
            tasks.append(asyncio.create_task(one(session, body, request_headers(row))))
            due = start + (i - start_index) / rate_per_s
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        if tasks:
            await asyncio.gather(*tasks)
    return stats
