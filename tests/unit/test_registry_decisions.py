"""Decision explanations render the recorded numbers of the gate and the canary."""

from __future__ import annotations

import numpy as np
from tests.canary_sim import Arm, SimBackend, SimClock

from pairflow.registry.decisions import canary_records, decisions_markdown, gate_rows
from pairflow.stages.deploy.controller import run_canary
from pairflow.stages.deploy.settings import DeployConfig
from pairflow.stages.evaluate.bootstrap import paired_bootstrap
from pairflow.stages.evaluate.gate import accuracy_chance, decide, recall_chance
from pairflow.stages.evaluate.settings import EvaluateConfig


def test_gate_and_canary_numbers_are_rendered() -> None:
    hits = (np.random.default_rng(0).random(120) < 0.5).astype(float)
    ci = paired_bootstrap("i2t_recall_at_1", hits, hits)
    gate = decide(
        "clip",
        {"i2t_recall_at_1": 0.5, "zero_shot_accuracy": 0.4},
        [ci],
        EvaluateConfig(),
        champion_note="champion v1",
        chances={
            "i2t_recall_at_1": recall_chance(120),
            "zero_shot_accuracy": accuracy_chance(["a", "b", "c"] * 40),
        },
    ).to_dict()
    rows = gate_rows(gate)
    floor = next(r for r in rows if r[0] == "floor")
    assert floor[1] == "i2t_recall_at_1" and floor[4] == "120"
    assert "chance 0.008333 (1/120 held-out queries)" in floor[5] and floor[6] == "PASS"
    assert any(r[0] == "non_inferiority" and r[3].startswith("[0, 0]") for r in rows)

    cfg = DeployConfig(steps=[50, 100])
    cfg.analysis.warmup_s = 0
    clock = SimClock()
    backend = SimBackend(np.random.default_rng(1), clock, Arm(), Arm(slow_share=0.1), rate=500)
    result = run_canary(backend, cfg, clock=clock)
    report = {"decision": result.decision, "reasons": result.reasons, **result.to_json()}
    records = canary_records(report)
    lat = next(r for r in records if r["metric"] == "latency_p95")
    assert lat["regression"] is True and lat["p"] is not None and lat["p"] < 0.05
    assert lat["n"][0] > 0 and lat["power"] == 0.9
    md = decisions_markdown(gate, report)
    assert "| 50% | latency_p95 | exceedance_over_stable_p95_fisher_greater |" in md
    assert "**rolled_back**" in md and "regression; step fail" in md
    assert "needed c/s (power)" in md and "### Gate decision" in md


def test_latency_against_the_champion_is_reported_not_gated() -> None:
    from pairflow.registry.card import budget_line
    from pairflow.stages.evaluate.versus_champion import LatencyVersusChampion

    measured = LatencyVersusChampion(32, 18.0, 24.0, 6.0, 8.0, "int8_onnx", 20, 0.1)
    assert measured.ratio == 3.0
    reason = measured.reason()
    assert reason.startswith("INFO latency at batch 32") and "3.00x" in reason
    assert "p50 18.00 ms" in reason and "champion (int8_onnx) p50 6.00 ms" in reason
    assert "within +10% of the champion" in reason
    gate = {"passed": True, "checks": [measured.check()]}
    (row,) = gate_rows(gate)
    assert row[0] == "latency" and row[-1] == "INFO"
    assert row[2] == "18 (fp32 candidate)" and "champion int8_onnx 6 (3x)" in row[3]
    assert "| latency | p50 ms at batch 32 |" in decisions_markdown(gate)
    # compress's budget, as the card's variant section says it
    met = {"met": True, "chosen_p50_ms": 6.3, "limit_ms": 6.6, "champion_p50_ms": 6.0}
    line = budget_line({**met, "batch_size": 32, "max_slowdown": 0.1})[1]
    assert line.startswith("Latency budget met: chosen p50 6.30 ms at batch 32 vs limit 6.60")
    assert "(champion 6.00 ms + 10%" in line
    missed = budget_line({**met, "met": False, "batch_size": 32, "max_slowdown": 0.1})[1]
    assert missed.startswith("Latency budget NOT met")
    assert budget_line(None) == []
