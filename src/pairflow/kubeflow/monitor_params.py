"""Parameters of the KFP ``monitor`` pipeline: a few config fields, plus what a pass needs.

Config-backed parameters are named like the retrain pipeline's (``section_field``), so
``pairflow schedule --pipeline monitor --set monitor.cooldown_hours=12`` maps as ``submit``'s
``--set`` does. The others: ``window_end`` (empty: the run's own time), ``dry_run``,
``kfp_host`` (the KFP API the trigger submits to; in-cluster default) and
``retrain_version`` (empty: the version the retrain recurring run is pinned to).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pairflow.config import (
    PairflowConfig,
    PipelineParam,
    apply_override,
    coerce_param,
    config_from_dict,
    parse_set,
)
from pairflow.errors import ConfigError

# The KFP API server inside a Kubeflow cluster (kubeflow/pipelines manifests: Service
# ``ml-pipeline`` in namespace ``kubeflow``, port 8888).
IN_CLUSTER_KFP_HOST = "http://ml-pipeline.kubeflow:8888"

_CONFIG_FIELDS: tuple[tuple[str, ...], ...] = (
    ("mlflow", "tracking_uri"),
    ("monitor", "log_prefix"),
    ("monitor", "window_hours"),
    ("monitor", "min_window_rows"),
    ("monitor", "cooldown_hours"),
    ("monitor", "retrain_data"),
    ("monitor", "trigger"),
    ("kubeflow", "namespace"),
)


def _field_param(cfg: PairflowConfig, path: tuple[str, ...]) -> PipelineParam:
    section, name = path
    model = getattr(cfg, "register_" if section == "register" else section)
    value = getattr(model, name)
    if type(value) not in (str, float, int, bool):
        raise TypeError(f"{'.'.join(path)}: {type(value).__name__} cannot be a KFP parameter")
    info = type(model).model_fields[name]
    return PipelineParam(
        path=path,
        name="_".join(path),
        type=type(value),
        default=value,
        title=name.replace("_", " "),
        description=(info.description or "").replace("\n", " "),
    )


def config_params(cfg: PairflowConfig) -> list[PipelineParam]:
    """The config-backed parameters, defaulting to ``cfg``'s values."""
    return [_field_param(cfg, path) for path in _CONFIG_FIELDS]


def extra_defaults(cfg: PairflowConfig) -> dict[str, Any]:
    """The parameters that are not config fields, with their defaults."""
    return {
        "window_end": "",
        "dry_run": False,
        "kfp_host": cfg.kubeflow.host or IN_CLUSTER_KFP_HOST,
        "retrain_version": "",
    }


def param_values(cfg: PairflowConfig) -> dict[str, Any]:
    """Every parameter of the monitor pipeline for ``cfg`` (what a recurring run sends)."""
    values = {p.name: p.default for p in config_params(cfg)}
    return {**values, **extra_defaults(cfg)}


def check_sets(sets: Iterable[str]) -> None:
    """Every ``--set`` of a monitor schedule must name a config-backed monitor parameter."""
    known = {".".join(path) for path in _CONFIG_FIELDS}
    for expr in sets:
        path, _ = parse_set(expr)
        key = ".".join(path)
        if key not in known:
            raise ConfigError(
                f"--set {key}: not a parameter of the monitor pipeline (it has "
                f"{', '.join(sorted(known))}); other values are compiled into the package"
            )


def apply_params(base: PairflowConfig, values: dict[str, Any]) -> PairflowConfig:
    """``base`` with the config-backed parameter ``values`` (flat names) applied."""
    by_name = {p.name: p for p in config_params(base)}
    data = base.to_dict()
    for name, value in values.items():
        param = by_name.get(name)
        if param is None:
            raise ConfigError(f"monitor pipeline parameter {name!r}: not a config field")
        apply_override(data, list(param.path), coerce_param(param, value))
    return config_from_dict(data, "monitor pipeline parameters")
