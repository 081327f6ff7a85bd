"""Rank-0 MLflow logging into the pipeline's run (buffered ``log_batch`` calls)."""

from __future__ import annotations

import logging
import time
from typing import Any

log = logging.getLogger("pairflow.stages.train.mlflow")


class MlflowStepLogger:
    """Buffers metric points and sends them every ``flush_every`` calls and on :meth:`flush`."""

    def __init__(self, tracking_uri: str, run_id: str, flush_every: int = 20) -> None:
        # lazy: mlflow (slow to import); only this path needs it
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id
        self.flush_every = flush_every
        self._buffer: list[Any] = []
        self._calls = 0

    def log_params(self, params: dict[str, Any]) -> None:
        # lazy: mlflow (slow to import); only this path needs it
        from mlflow.entities import Param

        self.client.log_batch(
            self.run_id, params=[Param(k, str(v)[:500]) for k, v in params.items()]
        )

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        # lazy: mlflow (slow to import); only this path needs it
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        self._calls += 1
        if self._calls % self.flush_every == 0:
            self.flush()

    def flush(self) -> None:
        for i in range(0, len(self._buffer), 1000):
            self.client.log_batch(self.run_id, metrics=self._buffer[i : i + 1000])
        self._buffer = []
