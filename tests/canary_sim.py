"""A simulated canary backend on a simulated clock, for power simulations of the controller.

Requests arrive at ``rate`` per simulated second and go to the candidate with the step's
weight. Each arm draws errors and latencies from its :class:`Arm`; every request carries a key
from a pool of ``pool`` distinct requests, whose stable answer is right with probability
``stable_accuracy`` (the candidate answers like stable unless ``Arm.flip`` says otherwise).
Windows are reduced to :class:`pairflow.stages.deploy.counts.WindowCounts` exactly as the local
backend does (:mod:`pairflow.stages.deploy.window`'s rules, vectorised).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pairflow.stages.deploy.counts import (
    FINE_LATENCY_BOUNDS,
    ArmCounts,
    PairedQuality,
    WindowCounts,
)

STABLE_MEDIAN_S = 0.030
SIGMA = 0.3
STABLE_P95_S = STABLE_MEDIAN_S * float(np.exp(1.6448536 * SIGMA))


@dataclass(frozen=True)
class Arm:
    error_rate: float = 0.02
    slow_share: float = 0.0  # share of requests at slow_factor x the stable p95
    slow_factor: float = 10.0
    flip: float = 0.0  # share of keys the candidate answers wrongly where stable is right


class SimClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SimBackend:
    name = "sim"

    def __init__(
        self,
        rng: np.random.Generator,
        clock: SimClock,
        stable: Arm,
        candidate: Arm,
        *,
        rate: float = 200.0,
        pool: int = 2000,
        stable_accuracy: float = 0.8,
    ) -> None:
        self.rng, self.clock, self.rate = rng, clock, rate
        self.arms = {"stable": stable, "candidate": candidate}
        self.weight = 0
        self.pool = pool
        self.stable_right = rng.random(pool) < stable_accuracy
        self.cand_right = self.stable_right & ~(rng.random(pool) < candidate.flip)
        self.t: dict[str, list[np.ndarray]] = {"stable": [], "candidate": []}
        self.err: dict[str, list[np.ndarray]] = {"stable": [], "candidate": []}
        self.lat: dict[str, list[np.ndarray]] = {"stable": [], "candidate": []}
        self.key: dict[str, list[np.ndarray]] = {"stable": [], "candidate": []}
        self.decision = ""

    def start(self) -> None:
        return None

    def set_weight(self, percent: int) -> None:
        self.weight = percent

    def bake(self, seconds: float) -> None:
        n = int(self.rng.poisson(self.rate * seconds))
        t = self.clock.now + np.sort(self.rng.random(n)) * seconds
        to_cand = self.rng.random(n) * 100 < self.weight
        for name, sel in (("candidate", to_cand), ("stable", ~to_cand)):
            arm, m = self.arms[name], int(sel.sum())
            lat = self.rng.lognormal(np.log(STABLE_MEDIAN_S), SIGMA, m)
            slow = self.rng.random(m) < arm.slow_share
            lat[slow] = arm.slow_factor * STABLE_P95_S
            self.t[name].append(t[sel])
            self.err[name].append(self.rng.random(m) < arm.error_rate)
            self.lat[name].append(lat)
            self.key[name].append(self.rng.integers(0, self.pool, m))
        self.clock.now += seconds

    def _arm(self, name: str, start: float, end: float) -> tuple[ArmCounts, np.ndarray]:
        t = np.concatenate(self.t[name]) if self.t[name] else np.zeros(0)
        sel = (t >= start) & (t < end)
        err = np.concatenate(self.err[name])[sel] if self.t[name] else np.zeros(0, bool)
        lat = np.concatenate(self.lat[name])[sel] if self.t[name] else np.zeros(0)
        keys = np.concatenate(self.key[name])[sel] if self.t[name] else np.zeros(0, int)
        ok = ~err
        counts = ArmCounts.from_samples(int(sel.sum()), int(err.sum()), lat[ok])
        return counts, keys[ok]

    def window(self, start: float, end: float) -> WindowCounts:
        stable, _ = self._arm("stable", start, end)
        cand, cand_keys = self._arm("candidate", start, end)
        seen = np.unique(np.concatenate(self.key["stable"])) if self.key["stable"] else np.zeros(0)
        keys = np.intersect1d(np.unique(cand_keys), seen)
        quality = None
        if keys.size:
            s_right, c_right = self.stable_right[keys], self.cand_right[keys]
            quality = PairedQuality(
                int(keys.size),
                int((s_right == c_right).sum()),
                int((s_right & ~c_right).sum()),
                int((c_right & ~s_right).sum()),
            )
        return WindowCounts(stable, cand, quality)

    def health(self) -> str | None:
        return None

    def rollback(self) -> None:
        self.decision = "rolled_back"

    def promote(self) -> None:
        self.decision = "promoted"

    def close(self) -> None:
        return None

    def describe(self) -> dict[str, object]:
        return {"backend": self.name}


__all__ = ["FINE_LATENCY_BOUNDS", "STABLE_P95_S", "Arm", "SimBackend", "SimClock"]
