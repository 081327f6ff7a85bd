"""Canary power simulation (seeded): the whole controller, default configuration, on a
simulated backend and clock (``canary_sim``). Each scenario runs 200 rollouts through the
default steps (10%, 25%, 50%), each step baked until its window reaches the sample size the
analysis requires for power 0.9 at the configured minimum effects.

- 10% of the candidate's requests at 10x the stable p95: rolled back >= 95%;
- 2x the stable error rate (2% -> 4%, the configured minimum effect): rolled back >= 90%;
- identical to stable: promoted >= 95% (false rollback <= 5%).

The measured rates are printed (``pytest -s`` shows them) and written as JSON to the test's
tmp dir.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.canary_sim import Arm, SimBackend, SimClock

from pairflow.stages.deploy.controller import PROMOTED, ROLLED_BACK, run_canary
from pairflow.stages.deploy.settings import DeployConfig

ROLLOUTS = 200


def _rates(candidate: Arm, seed: int) -> dict[str, float]:
    cfg = DeployConfig()  # default steps, levels, power and minimum effects
    cfg.analysis.warmup_s = 0.0
    cfg.check_interval_s = 10.0  # interim looks every 10 simulated seconds
    rng = np.random.default_rng(seed)
    rolled, steps, looks = 0, 0, 0
    for _ in range(ROLLOUTS):
        clock = SimClock()
        backend = SimBackend(rng, clock, Arm(), candidate, rate=1000.0)
        result = run_canary(backend, cfg, clock=clock)
        assert result.decision in (PROMOTED, ROLLED_BACK)
        assert backend.decision == ("promoted" if result.decision == PROMOTED else "rolled_back")
        rolled += result.decision == ROLLED_BACK
        steps += len(result.steps)
        looks += sum(s.interim_looks for s in result.steps)
        for s in result.steps:
            if s.verdict == "pass":  # a passed step was powered for every metric
                assert s.analysis is not None
                assert all(m.powered for m in s.analysis.metrics)
    return {"rollback_rate": rolled / ROLLOUTS, "rollouts": ROLLOUTS, "steps": steps}


@pytest.mark.slow
def test_canary_power_simulation(tmp_path: Path) -> None:
    scenarios = {
        "slow_10pct_at_10x_p95": (Arm(slow_share=0.10, slow_factor=10.0), 1),
        "errors_2x_at_min_effect": (Arm(error_rate=0.04), 2),
        "identical": (Arm(), 3),
    }
    measured = {name: _rates(arm, seed) for name, (arm, seed) in scenarios.items()}
    for name, m in measured.items():
        print(
            f"canary power simulation: {name}: rolled back {m['rollback_rate']:.3f} "
            f"of {m['rollouts']} rollouts ({m['steps']} analysed steps)"
        )
    (tmp_path / "canary_power.json").write_text(json.dumps(measured, indent=2))
    assert measured["slow_10pct_at_10x_p95"]["rollback_rate"] >= 0.95
    assert measured["errors_2x_at_min_effect"]["rollback_rate"] >= 0.90
    assert measured["identical"]["rollback_rate"] <= 0.05
    assert all(m["steps"] >= ROLLOUTS for m in measured.values())
