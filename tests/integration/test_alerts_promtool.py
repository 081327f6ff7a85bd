"""manifests/base/alerts.yaml through the real ``promtool`` (Debian package ``prometheus``).

The rule groups of the PrometheusRule rendered by kustomize are written as a Prometheus rules
file; ``promtool check rules`` must accept it and ``promtool test rules`` runs, for every alert,
one series set on which it fires (with its labels) and one on which it stays silent.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml
from tests.manifests_render import find_object, render_overlay, require_tool

ALERTS = {
    "PairflowPredictorErrorRateHigh",
    "PairflowPredictorLatencyHigh",
    "PairflowCanaryWorseThanStable",
    "PairflowPredictorNoTraffic",
}


def _series(version: str, requests: str, errors: str, fast: str, slow: str) -> list[dict[str, str]]:
    """Counters of one model version: requests, errors, latency buckets (fast < 0.1 s, slow
    in (0.5 s, 1 s]), each a promtool expanding notation per minute."""
    lab = f'model_name="pairflow",model_version="{version}",protocol="v1"'
    both = f"0+{int(fast) + int(slow)}x60"
    bucket = "pairflow_predictor_latency_seconds_bucket"
    return [
        {"series": f"pairflow_predictor_requests_total{{{lab}}}", "values": requests},
        {"series": f'pairflow_predictor_errors_total{{{lab},kind="model"}}', "values": errors},
        {"series": f'{bucket}{{{lab},le="0.1"}}', "values": f"0+{fast}x60"},
        {"series": f'{bucket}{{{lab},le="0.5"}}', "values": f"0+{fast}x60"},
        {"series": f'{bucket}{{{lab},le="1"}}', "values": both},
        {"series": f'{bucket}{{{lab},le="+Inf"}}', "values": both},
    ]


def _annotations(name: str, labels: dict[str, str]) -> dict[str, str]:
    """The rule's annotations with ``{{ $labels.x }}`` filled in as Prometheus would."""
    rule = find_object(render_overlay("prod"), "PrometheusRule", "pairflow-canary")
    (spec,) = [r for g in rule["spec"]["groups"] for r in g["rules"] if r.get("alert") == name]
    out = {}
    for key, text in spec["annotations"].items():
        for label, value in labels.items():
            text = text.replace("{{ $labels." + label + " }}", value)
        out[key] = text
    return out


def _alert(name: str, at: str, labels: dict[str, str] | None) -> dict[str, Any]:
    exp = []
    if labels is not None:
        exp = [{"exp_labels": labels, "exp_annotations": _annotations(name, labels)}]
    return {"eval_time": at, "alertname": name, "exp_alerts": exp}


def _tests() -> list[dict[str, Any]]:
    v2 = {"model_version": "2"}
    # version 1 healthy (1% errors, fast), version 2 bad (10% errors, slow)
    bad = {
        "interval": "1m",
        "input_series": _series("1", "0+100x60", "0+1x60", "100", "0")
        + _series("2", "0+100x60", "0+10x60", "0", "100"),
        "alert_rule_test": [
            _alert("PairflowPredictorErrorRateHigh", "4m", None),  # `for: 5m` not yet met
            _alert("PairflowPredictorErrorRateHigh", "15m", {"severity": "critical", **v2}),
            _alert("PairflowPredictorLatencyHigh", "25m", {"severity": "warning", **v2}),
            _alert("PairflowCanaryWorseThanStable", "25m", {"severity": "warning", **v2}),
            _alert("PairflowPredictorNoTraffic", "50m", None),
        ],
    }
    # both versions healthy, then no traffic at all
    good = {
        "interval": "1m",
        "input_series": _series("1", "0+100x60", "0+1x60", "100", "0")
        + _series("2", "0+100x60", "0+1x60", "100", "0"),
        "alert_rule_test": [
            _alert("PairflowPredictorErrorRateHigh", "25m", None),
            _alert("PairflowPredictorLatencyHigh", "25m", None),
            _alert("PairflowCanaryWorseThanStable", "25m", None),
            _alert("PairflowPredictorNoTraffic", "50m", None),
        ],
    }
    idle = {
        "interval": "1m",
        "input_series": _series("1", "0+0x60", "0+0x60", "0", "0"),
        "alert_rule_test": [
            _alert("PairflowPredictorNoTraffic", "20m", None),  # `for: 30m` not yet met
            _alert("PairflowPredictorNoTraffic", "50m", {"severity": "info"}),
        ],
    }
    return [bad, good, idle]


def _rules_file(tmp: Path) -> Path:
    rule = find_object(render_overlay("prod"), "PrometheusRule", "pairflow-canary")
    path = tmp / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def test_alert_rules_pass_promtool_check_and_unit_tests(tmp_path: Path) -> None:
    promtool = require_tool("promtool", "prometheus (Debian)")
    rules = _rules_file(tmp_path)
    names = {r["alert"] for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]
             if "alert" in r}  # fmt: skip
    assert names == ALERTS
    check = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    tests = _tests()
    covered = {t["alertname"] for case in tests for t in case["alert_rule_test"]}
    fired = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert covered == fired == ALERTS  # each alert both fires and stays silent somewhere
    spec = tmp_path / "rules_test.yaml"
    spec.write_text(
        yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": tests})
    )
    run = subprocess.run(
        [promtool, "test", "rules", spec.name], capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_promtool_unit_tests_catch_a_wrong_expectation(tmp_path: Path) -> None:
    """The harness can fail: expecting silence where the error alert fires is reported."""
    promtool = require_tool("promtool", "prometheus (Debian)")
    rules = _rules_file(tmp_path)
    case = _tests()[0]
    case["alert_rule_test"] = [_alert("PairflowPredictorErrorRateHigh", "15m", None)]
    spec = tmp_path / "rules_test.yaml"
    spec.write_text(
        yaml.safe_dump({"rule_files": [rules.name], "evaluation_interval": "1m", "tests": [case]})
    )
    run = subprocess.run(
        [promtool, "test", "rules", spec.name], capture_output=True, text=True, cwd=tmp_path
    )
    assert run.returncode != 0
    assert "PairflowPredictorErrorRateHigh" in run.stdout + run.stderr
