"""The demo's monitor round: serve the champion with the sink beside it, replay traffic from a
shifted source (plus a share of the usual one), flush the log. ``pairflow demo --rounds 3``
then runs :func:`pairflow.stages.monitor.run.monitor_window` on that window (``pairflow.cli``)."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from pairflow.config import PairflowConfig
from pairflow.errors import PairflowError
from pairflow.serve.requestlog.sink_launch import start_sink
from pairflow.stages.deploy.local import PredictorProcess, free_port, serve_command
from pairflow.stages.deploy.replay import ReplayStats, load_pairs, replay

IMAGE_PX = 64  # the generator's image size: requests carry the images as they are


@dataclass(frozen=True)
class Traffic:
    """What was replayed against the champion (every request logged: sample rate 1)."""

    requests: int
    ok: int
    failed: int
    shifted: int
    usual: int
    log_prefix: str
    served_model: str


def _pairs(manifest: Path, n: int) -> list[dict[str, object]]:
    frame = pd.read_parquet(manifest)
    pairs = load_pairs(frame, IMAGE_PX, limit=n, base=manifest.parent)
    return pairs[:n]


def replay_against_champion(
    cfg: PairflowConfig,
    tracking_uri: str,
    shifted_manifest: Path,
    usual_manifest: Path,
    *,
    requests: int,
    shifted_share: float,
    rate_per_s: float,
    log_dir: Path,
) -> Traffic:
    """Serve ``models:/<register.model_name>@champion`` with every request logged (sample rate
    1) through a local ``pairflow monitor-sink`` into ``monitor.log_prefix``; send
    ``requests`` single-pair requests, ``shifted_share`` of them from the shifted source."""
    prefix = cfg.monitor.log_prefix
    if not prefix:
        raise PairflowError("monitor.log_prefix: empty; the demo's sink writes there")
    n_shift = round(requests * shifted_share)
    pairs = _pairs(shifted_manifest, n_shift) + _pairs(usual_manifest, requests - n_shift)
    if len(pairs) < requests:
        raise PairflowError(
            f"demo traffic: only {len(pairs)} readable pairs for {requests} requests"
        )
    # interleave the two sources (a fixed order), so the window is a mixture throughout
    pairs.sort(key=lambda p: hashlib.sha256(str(p["id"]).encode()).hexdigest())
    log_dir.mkdir(parents=True, exist_ok=True)
    sink = start_sink(prefix, log_path=log_dir / "monitor-sink.log")
    model = f"models:/{cfg.register_.model_name}@champion"
    port = free_port()
    command = [
        *serve_command(model, port),
        "--tracking-uri",
        tracking_uri,
        "--set",
        f"monitor.sink_url={sink.url}",
        "--set",
        "monitor.sample_rate=1.0",
    ]
    served = cfg.serve.model_name
    predictor = PredictorProcess(command, port, log_dir / "champion-serve.log")
    try:
        predictor.start(cfg.deploy.local.startup_timeout_s)
        stats: ReplayStats = asyncio.run(
            replay(
                predictor.url,
                pairs,
                len(pairs) / rate_per_s,
                path=f"/v1/models/{served}:predict",
                rate_per_s=rate_per_s,
                concurrency=4,
                timeout_s=30.0,
            )
        )
    finally:
        predictor.stop()  # SIGTERM: in-flight requests finish, their events are posted
    try:
        sink.flush()
    finally:
        sink.stop()
    return Traffic(
        requests=stats.sent,
        ok=stats.ok,
        failed=stats.failed,
        shifted=n_shift,
        usual=len(pairs) - n_shift,
        log_prefix=prefix,
        served_model=model,
    )
