"""The drift monitor's alerts (PrometheusRule ``pairflow-monitor`` in
manifests/base/alerts.yaml) through the real ``promtool`` (Debian package ``prometheus``).

The rule is taken from the kustomize rendering of the prod overlay. Its metric names must be
gauges :mod:`pairflow.stages.monitor.gauges` really exports. ``promtool check rules`` must accept
it,
and ``promtool test rules`` covers ``PairflowMonitorDriftPersists`` (N = 3 windows in a row:
fires at 3, silent at N-1 = 2, silent after a reset to 0 and when a reset interrupts the run)
and ``PairflowMonitorStale`` (no window judged for two days).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from tests.manifests_render import find_object, render_overlay, require_tool

from pairflow.stages.monitor.gauges import build_registry
from pairflow.stages.monitor.verdict import WindowId, WindowVerdict

PERSISTS = "PairflowMonitorDriftPersists"
STALE = "PairflowMonitorStale"
SERIES = 'pairflow_monitor_consecutive_drift_windows{model_name="pairflow-clip",model_version="4"}'
LAST_END = 'pairflow_monitor_last_window_end_seconds{model_name="pairflow-clip",model_version="4"}'
LABELS = {"model_name": "pairflow-clip", "model_version": "4", "severity": "warning"}


def _rule() -> dict[str, Any]:
    rule: dict[str, Any] = find_object(render_overlay("prod"), "PrometheusRule", "pairflow-monitor")
    return rule


def _alert(name: str, at: str, fires: bool, value: str = "3") -> dict[str, Any]:
    exp: list[dict[str, Any]] = []
    if fires and name == PERSISTS:
        exp = [
            {
                "exp_labels": LABELS,
                "exp_annotations": {
                    "summary": f"model pairflow-clip v4: served traffic drifted from the "
                    f"champion's reference in {value} windows in a row",
                    "description": "See the pairflow-monitor MLflow runs (drift report per "
                    "window); the trigger retrains unless its guardrails hold it back.",
                },
            }
        ]
    elif fires:
        exp = [
            {
                "exp_labels": {"model_name": "pairflow-clip", "severity": "warning"},
                "exp_annotations": {
                    "summary": "model pairflow-clip: no window judged for two days",
                    "description": "The monitor's recurring run has stopped or fails; drift "
                    "alerts cannot fire without it.",
                },
            }
        ]
    return {"eval_time": at, "alertname": name, "exp_alerts": exp}


def _case(consecutive: str, checks: list[dict[str, Any]], last_end: str) -> dict[str, Any]:
    """One promtool test: the pushed gauges, one sample per hour (one window a day would
    only stretch the time axis)."""
    return {
        "interval": "1h",
        "input_series": [
            {"series": SERIES, "values": consecutive},
            {"series": LAST_END, "values": last_end},
        ],
        "alert_rule_test": checks,
    }


FRESH = "0+3600x60"  # the last window always ended at the sample's time: never stale


def _tests() -> list[dict[str, Any]]:
    return [
        # drift in 1, 2, 3, 4 windows in a row: fires from the third
        _case(
            "1 2 3 4",
            [
                _alert(PERSISTS, "1h", False),
                _alert(PERSISTS, "2h", True, "3"),
                _alert(PERSISTS, "3h", True, "4"),
                _alert(STALE, "3h", False),
            ],
            FRESH,
        ),
        # N-1 = 2 windows in a row, held: never fires
        _case("1 2 2 2 2", [_alert(PERSISTS, "1h", False), _alert(PERSISTS, "4h", False)], FRESH),
        # a window without drift resets the run (1 2 0 1 2): never fires
        _case("1 2 0 1 2", [_alert(PERSISTS, "2h", False), _alert(PERSISTS, "4h", False)], FRESH),
        # fired, then a clean window resets it: the alert resolves
        _case(
            "1 2 3 0 0", [_alert(PERSISTS, "2h", True, "3"), _alert(PERSISTS, "3h", False)], FRESH
        ),
        # the monitor stops pushing: the last window's end stays at 0 (the epoch)
        _case(
            "1x60",
            [_alert(STALE, "40h", False), _alert(STALE, "51h", True)],
            "0x60",
        ),
    ]


def _write(tmp: Path, tests: list[dict[str, Any]]) -> tuple[Path, Path]:
    rules = tmp / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": _rule()["spec"]["groups"]}))
    spec = tmp / "rules_test.yaml"
    spec.write_text(
        yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1h", "tests": tests})
    )
    return rules, spec


def test_monitor_alerts_read_gauges_the_monitor_exports() -> None:
    win = WindowId("2026-01-01T00:00:00+00:00", "2026-01-02T00:00:00+00:00", "m", "1")
    verdict = WindowVerdict(win, 300, 400, judged=True, drift=True, drift_share=0.5)
    verdict.embedding_auc = {"image": 0.9, "text": 0.6}
    verdict.score_drop = 0.01
    exported = {m.name for m in build_registry(verdict, 3).collect()}
    alerts = [r for g in _rule()["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert {a["alert"] for a in alerts} == {PERSISTS, STALE}
    for alert in alerts:
        names = set(re.findall(r"\b(pairflow_[a-z0-9_]+)", alert["expr"]))
        assert names and names <= exported, names - exported


def test_monitor_alert_rules_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "prometheus (Debian)")
    rules, spec = _write(tmp_path, _tests())
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    run = subprocess.run(
        [promtool, "test", "rules", spec.name], capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_monitor_promtool_tests_fail_at_n_minus_one_if_expected_to_fire(tmp_path: Path) -> None:
    """The harness can fail: expecting the alert after two windows in a row is reported."""
    promtool = require_tool("promtool", "prometheus (Debian)")
    wrong = _case("1 2 2", [_alert(PERSISTS, "2h", True, "2")], FRESH)
    _, spec = _write(tmp_path, [wrong])
    run = subprocess.run(
        [promtool, "test", "rules", spec.name], capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode != 0
    assert PERSISTS in run.stdout + run.stderr
