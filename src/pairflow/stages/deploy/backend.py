"""The interface every canary backend implements (local processes, KServe)."""

from __future__ import annotations

from typing import Protocol

from pairflow.errors import PairflowError
from pairflow.stages.deploy.counts import WindowCounts


class MetricsUnavailable(PairflowError):
    """A backend could not read a step's metrics (a failed step, never a pass)."""


class CanaryBackend(Protocol):
    """Traffic split, traffic, per-backend counts and the final switch, for one rollout.

    Times are wall-clock seconds (``time.time()``); :meth:`window` returns stable's and the
    candidate's counts over the same interval, so they are compared under the same load.
    """

    name: str

    def start(self) -> None:
        """Make stable and candidate serve (candidate at 0%)."""

    def set_weight(self, percent: int) -> None:
        """Send ``percent``% of traffic to the candidate."""

    def bake(self, seconds: float) -> None:
        """Let ``seconds`` pass with traffic flowing (the local replayer sends it)."""

    def window(self, start: float, end: float) -> WindowCounts:
        """Stable's and the candidate's counts of requests in ``[start, end)`` (see
        :mod:`pairflow.stages.deploy.counts`)."""
        ...

    def health(self) -> str | None:
        """Why the candidate cannot serve (e.g. its process died), or None."""
        ...

    def rollback(self) -> None:
        """All traffic to stable."""

    def promote(self) -> None:
        """All traffic to the candidate, which becomes the stable deployment."""

    def close(self) -> None:
        """Release what :meth:`start` acquired."""

    def describe(self) -> dict[str, object]:
        """Figures for the report (URLs, client-side replay counts...)."""
        ...
