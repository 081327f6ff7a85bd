"""The config model: YAML + --set overrides, unknown keys, and the UI pipeline parameters."""

from __future__ import annotations

from pathlib import Path

import pytest

from pairflow.config import (
    PairflowConfig,
    apply_pipeline_params,
    load_config,
    param_values_from_config,
    parse_set,
    pipeline_params,
)
from pairflow.errors import ConfigError


def test_yaml_and_set_overrides_are_typed(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 5\ndata:\n  shards: 3\n")
    cfg = load_config(
        path,
        [
            "train.epochs=7",
            "clip_filter.top_fraction=0.3",
            "compress.distill=true",
            "validate.allowed_formats=[PNG]",
        ],
    )
    assert cfg.train.epochs == 7
    assert cfg.data.shards == 3
    assert cfg.clip_filter.top_fraction == pytest.approx(0.3)
    assert cfg.compress.distill is True
    assert cfg.validate_.allowed_formats == ["PNG"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["trian.epochs=3"], "unknown key 'trian'"),
        (["train.epoch=3"], "unknown key 'train.epoch'"),
        (["train.epochs=-1"], "train.epochs"),
        (["train.epochs"], "expected KEY.PATH=VALUE"),
        (["=3"], "expected KEY.PATH=VALUE"),
        (["train..epochs=3"], "expected KEY.PATH=VALUE"),
        (["train.epochs.x=3"], "train.epochs: Input should be a valid integer"),
    ],
)
def test_bad_overrides_name_the_key(sets: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config(None, sets)


def test_unknown_key_in_file_names_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("dedupe:\n  phash_max_distanse: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value)
    assert "dedupe.phash_max_distanse" in str(err.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(bad)


def test_parse_set_reads_yaml_scalars() -> None:
    assert parse_set("a.b=3") == (["a", "b"], 3)
    assert parse_set("a.b=0.5") == (["a", "b"], 0.5)
    assert parse_set("a.b=s3://x/y") == (["a", "b"], "s3://x/y")
    assert parse_set("a=") == (["a"], "")


def test_pipeline_params_have_titles_descriptions_and_scalar_types() -> None:
    params = {p.name: p for p in pipeline_params()}
    assert params["data_source"].title == "Data source"
    assert params["data_shards"].type is int
    assert params["clip_filter_threshold"].type is float
    assert params["compress_int8"].type is bool
    assert params["data_s3_endpoint_url"].type is str
    assert params["validate_min_width"].dotted == "validate.min_width"
    assert all(p.description for p in params.values())
    # non-UI fields stay out of the UI
    assert "kubeflow_base_image" not in params


def test_param_values_round_trip_through_kfp_stringification() -> None:
    cfg = load_config(
        None,
        [
            "data.shards=4",
            "compress.int8=false",
            "clip_filter.threshold=0.3",
            "data.s3.endpoint_url=http://127.0.0.1:9000",
        ],
    )
    values = param_values_from_config(cfg)
    # kfp passes parameters nested in a struct as strings, ints as floats: "4.0", "false"
    stringified = {
        k: str(float(v))
        if isinstance(v, int) and not isinstance(v, bool)
        else str(v).lower()
        if isinstance(v, bool)
        else str(v)
        for k, v in values.items()
    }
    assert stringified["data_shards"] == "4.0"
    again = apply_pipeline_params(PairflowConfig(), stringified)
    assert again == cfg
    # an empty string restores a nullable field to None
    reset = apply_pipeline_params(cfg, {"data_s3_endpoint_url": ""})
    assert reset.data.s3.endpoint_url is None


def test_pipeline_params_reject_bad_values() -> None:
    with pytest.raises(ConfigError, match="data_shards"):
        apply_pipeline_params(PairflowConfig(), {"data_shards": "2.5"})
    with pytest.raises(ConfigError, match="compress_int8"):
        apply_pipeline_params(PairflowConfig(), {"compress_int8": "maybe"})
    with pytest.raises(ConfigError, match="not a config field"):
        apply_pipeline_params(PairflowConfig(), {"nope": 1})


def test_digest_changes_with_content() -> None:
    a = PairflowConfig()
    b = load_config(None, ["train.epochs=9"])
    assert a.digest() == PairflowConfig().digest()
    assert a.digest() != b.digest()
