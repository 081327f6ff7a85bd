"""The monitor pipeline's parameters and the CLI's window end: values as KFP and users give them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pairflow.config import PairflowConfig, load_config
from pairflow.errors import ConfigError, PairflowError
from pairflow.kubeflow.monitor_params import apply_params, check_sets, param_values
from pairflow.stages.monitor.cli import parse_window_end


def test_struct_stringified_values_are_coerced_back() -> None:
    """KFP passes parameters nested in a struct as strings ("12.0", "false")."""
    cfg = apply_params(
        PairflowConfig(),
        {
            "monitor_cooldown_hours": "12.0",
            "monitor_min_window_rows": "50.0",
            "monitor_trigger": "false",
            "monitor_retrain_data": "window",
            "monitor_log_prefix": "s3://b/log",
            "kubeflow_namespace": "team-a",
        },
    )
    m = cfg.monitor
    assert (m.cooldown_hours, m.min_window_rows, m.trigger) == (12.0, 50, False)
    assert m.retrain_data == "window" and m.log_prefix == "s3://b/log"
    assert cfg.kubeflow.namespace == "team-a"
    with pytest.raises(ConfigError, match="retrain_data"):
        apply_params(PairflowConfig(), {"monitor_retrain_data": "everything"})
    with pytest.raises(ConfigError, match="monitor_min_window_rows"):
        apply_params(PairflowConfig(), {"monitor_min_window_rows": "1.5"})
    with pytest.raises(ConfigError, match="not a config field"):
        apply_params(PairflowConfig(), {"train_epochs": 3})


def test_param_values_follow_the_config() -> None:
    cfg = load_config(None, ["monitor.cooldown_hours=6", "kubeflow.host=https://kfp.example"])
    values = param_values(cfg)
    assert values["monitor_cooldown_hours"] == 6.0
    assert values["kfp_host"] == "https://kfp.example"
    assert (values["window_end"], values["dry_run"], values["retrain_version"]) == ("", False, "")
    check_sets(["monitor.cooldown_hours=6", "mlflow.tracking_uri=http://m"])
    with pytest.raises(ConfigError, match=r"train\.epochs: not a parameter of the monitor"):
        check_sets(["train.epochs=2"])


def test_window_end_needs_a_timezone() -> None:
    assert parse_window_end("2026-12-06T12:00:00Z") == datetime(2026, 12, 6, 12, tzinfo=UTC)
    assert parse_window_end(None) is None
    with pytest.raises(PairflowError, match="give a timezone"):
        parse_window_end("2026-12-06T12:00:00")
    with pytest.raises(PairflowError, match="not an ISO 8601 time"):
        parse_window_end("yesterday")
