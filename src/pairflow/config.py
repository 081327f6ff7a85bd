"""One typed config for the whole pipeline: YAML file + ``--set a.b=c`` overrides.

Fields marked with :func:`ui` become parameters of the compiled KFP pipeline, so a user can
set them from the Kubeflow UI; their title and description are what the UI shows.
Unknown keys are errors everywhere (``extra="forbid"``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pairflow.config_fields import UI_FLAG, Section, ui
from pairflow.data.settings import DataConfig, S3Config, SplitConfig
from pairflow.errors import ConfigError
from pairflow.kubeflow.settings import KubeflowConfig
from pairflow.serve.settings import ServeConfig
from pairflow.stages.clip_filter.settings import ClipFilterConfig
from pairflow.stages.compress.settings import CompressConfig
from pairflow.stages.dedupe.settings import DedupeConfig
from pairflow.stages.deploy.settings import DeployConfig
from pairflow.stages.evaluate.settings import EvaluateConfig
from pairflow.stages.monitor.settings import MonitorConfig
from pairflow.stages.register.settings import RegisterConfig
from pairflow.stages.train.settings import AugmentConfig, TrainConfig
from pairflow.stages.validate.settings import ContractConfig, ValidateConfig

# The section types are re-exported: code outside a stage takes a section's type from here.
__all__ = [
    "AugmentConfig",
    "ClipFilterConfig",
    "CompressConfig",
    "ContractConfig",
    "DataConfig",
    "DedupeConfig",
    "DeployConfig",
    "EvaluateConfig",
    "KubeflowConfig",
    "MlflowConfig",
    "MonitorConfig",
    "PairflowConfig",
    "PipelineParam",
    "RegisterConfig",
    "RunConfig",
    "S3Config",
    "ServeConfig",
    "SplitConfig",
    "TrainConfig",
    "ValidateConfig",
    "apply_override",
    "apply_pipeline_params",
    "coerce_param",
    "config_from_dict",
    "config_from_json",
    "load_config",
    "param_values_from_config",
    "parse_set",
    "pipeline_params",
]


class MlflowConfig(Section):
    """The tracking server, and the retry policy of every MLflow call.

    The tracking URI is resolved once (:func:`pairflow.tracking.resolve_mlflow_settings`): by
    the resolve-config step into the run's config, or by a CLI after loading its config; steps
    read ``mlflow.tracking_uri`` as it is. Retries are MLflow's own HTTP retries (urllib3:
    connection errors and 408/429/500/502/503/504 answers are retried with exponential backoff
    and jitter; a refused request, 4xx, never is), set by the ``http_*`` fields below as
    MLflow's ``MLFLOW_HTTP_REQUEST_*`` environment of every step and CLI (they override those
    variables). A call that still fails is a ``RegistryUnavailable`` error; on a cluster KFP
    then retries the whole step (``kubeflow.io_retries``). Nothing else retries MLflow calls.
    """

    tracking_uri: str = ui(
        "",
        "MLflow tracking URI",
        "Empty: $MLFLOW_TRACKING_URI, else sqlite:///<workdir>/mlflow.db.",
    )
    experiment: str = ui("pairflow-retrain", "MLflow experiment", "Experiment for run records.")
    http_retries: int = Field(
        7,
        ge=0,
        le=10,
        description="MLFLOW_HTTP_REQUEST_MAX_RETRIES: retries of one MLflow HTTP request on a "
        "connection error or a 408/429/5xx answer (MLflow's default; 0: none).",
    )
    http_backoff_factor: int = Field(
        2,
        ge=0,
        le=120,
        description="MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR: the n-th retry waits factor x 2^(n-1) "
        "seconds (the first none, at most 120 s) plus up to 1 s of jitter; with the defaults "
        "about 4 minutes in all, which outlasts a server restart or rate limiting.",
    )
    http_timeout_s: int = Field(
        120, ge=1, description="MLFLOW_HTTP_REQUEST_TIMEOUT: timeout of one MLflow HTTP request."
    )


class RunConfig(Section):
    """Local runs (kfp.local): work dir and seed."""

    workdir: str = ui(
        ".pairflow",
        "Work directory",
        "Local runs: where outputs and the default sqlite MLflow store live.",
    )
    seed: int = ui(0, "Seed", "Global random seed.")


class PairflowConfig(Section):
    """The whole pipeline's configuration."""

    run: RunConfig = Field(default_factory=RunConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    validate_: ValidateConfig = Field(default_factory=ValidateConfig, alias="validate")
    dedupe: DedupeConfig = Field(default_factory=DedupeConfig)
    clip_filter: ClipFilterConfig = Field(default_factory=ClipFilterConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    compress: CompressConfig = Field(default_factory=CompressConfig)
    register_: RegisterConfig = Field(default_factory=RegisterConfig, alias="register")
    serve: ServeConfig = Field(default_factory=ServeConfig)
    deploy: DeployConfig = Field(default_factory=DeployConfig)
    mlflow: MlflowConfig = Field(default_factory=MlflowConfig)
    kubeflow: KubeflowConfig = Field(default_factory=KubeflowConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @model_validator(mode="after")
    def _check(self) -> PairflowConfig:
        if self.clip_filter.top_fraction == 1.0:
            raise ValueError("clip_filter.top_fraction=1 keeps everything; use 0 to disable")
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        """sha256 of the canonical JSON form: the config hash recorded with models."""
        return hashlib.sha256(self.to_json().encode()).hexdigest()


# ---------------------------------------------------------------------------------------------
# loading and overrides


def parse_set(expr: str) -> tuple[list[str], Any]:
    """Parse ``a.b=c`` into (["a", "b"], value); the value is read as a YAML scalar/list."""
    key, sep, raw = expr.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"--set {expr!r}: expected KEY.PATH=VALUE, e.g. train.epochs=3")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {expr!r}: value is not valid YAML ({exc})") from exc
    return key.split("."), value


def apply_override(data: dict[str, Any], path: list[str], value: Any) -> None:
    """Set ``data[path[0]]...[path[-1]] = value``; unknown keys are reported by validation."""
    node = data
    for i, part in enumerate(path[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[: i + 1])} is not a section")
        node = nxt
    node[path[-1]] = value


def _format_validation_error(exc: ValidationError, origin: str) -> str:
    problems = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key {loc!r}")
        else:
            problems.append(f"{loc}: {err['msg']}")
    return f"{origin}: " + "; ".join(problems)


def load_config(path: str | Path | None = None, sets: Iterable[str] = ()) -> PairflowConfig:
    """Load the YAML config at ``path`` (or defaults) and apply ``--set`` overrides."""
    data: dict[str, Any] = {}
    origin = "config"
    if path is not None:
        p = Path(path)
        origin = str(p)
        try:
            loaded = yaml.safe_load(p.read_text())
        except FileNotFoundError as exc:
            raise ConfigError(f"{p}: config file not found") from exc
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{p}: not a readable YAML config ({exc})") from exc
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: top level must be a mapping of sections")
        data = loaded
    for expr in sets:
        keys, value = parse_set(expr)
        apply_override(data, keys, value)
    return config_from_dict(data, origin)


def config_from_dict(data: dict[str, Any], origin: str = "config") -> PairflowConfig:
    try:
        return PairflowConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(exc, origin)) from exc


def config_from_json(text: str) -> PairflowConfig:
    return config_from_dict(json.loads(text), "config_json")


# ---------------------------------------------------------------------------------------------
# pipeline parameters (what the Kubeflow UI shows)


@dataclass(frozen=True)
class PipelineParam:
    """A config field exposed as a KFP pipeline parameter."""

    path: tuple[str, ...]
    name: str
    type: type
    default: Any
    title: str
    description: str

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


_SCALARS: dict[str, type] = {"string": str, "integer": int, "number": float, "boolean": bool}


def _iter_ui_fields(model: type[BaseModel], prefix: tuple[str, ...]) -> Iterator[PipelineParam]:
    for fname, field in model.model_fields.items():
        key = field.alias or fname
        ann = field.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _iter_ui_fields(ann, (*prefix, key))
            continue
        extra = field.json_schema_extra
        if not (isinstance(extra, dict) and extra.get(UI_FLAG)):
            continue
        schema = model.model_json_schema()["properties"][key]
        kinds = [schema.get("type")] + [s.get("type") for s in schema.get("anyOf", [])]
        ptype = next((_SCALARS[k] for k in kinds if k in _SCALARS), str)
        default = field.default
        if default is None:
            default = "" if ptype is str else default
        yield PipelineParam(
            path=(*prefix, key),
            name="_".join((*prefix, key)),
            type=ptype,
            default=default,
            title=field.title or key,
            description=field.description or "",
        )


def pipeline_params() -> list[PipelineParam]:
    """Every UI-exposed config field, flattened to ``section_field`` parameter names."""
    return list(_iter_ui_fields(PairflowConfig, ()))


def apply_pipeline_params(base: PairflowConfig, values: dict[str, Any]) -> PairflowConfig:
    """Return ``base`` with pipeline parameter ``values`` (by flat name) applied and validated."""
    by_name = {p.name: p for p in pipeline_params()}
    data = base.to_dict()
    for name, value in values.items():
        if name not in by_name:
            raise ConfigError(f"pipeline parameter {name!r}: not a config field")
        param = by_name[name]
        if value == "" and param.type is str and param.default == "" and _is_nullable(param):
            value = None
        else:
            value = coerce_param(param, value)
        apply_override(data, list(param.path), value)
    return config_from_dict(data, "pipeline parameters")


def coerce_param(param: PipelineParam, value: Any) -> Any:
    """Undo KFP's stringification of parameters nested in a struct ("3.0", "false")."""
    if not isinstance(value, str) or param.type is str:
        return value
    text = value.strip()
    try:
        if param.type is bool:
            lowered = text.lower()
            if lowered in {"true", "1"}:
                return True
            if lowered in {"false", "0"}:
                return False
            raise ValueError(text)
        if param.type is int:
            number = float(text)
            if not number.is_integer():
                raise ValueError(text)
            return int(number)
        if param.type is float:
            return float(text)
    except ValueError as exc:
        raise ConfigError(
            f"pipeline parameter {param.name}: {value!r} is not a valid {param.type.__name__}"
        ) from exc
    return value


def _is_nullable(param: PipelineParam) -> bool:
    node: Any = PairflowConfig
    field = None
    for part in param.path:
        fields = {f.alias or k: f for k, f in node.model_fields.items()}
        field = fields[part]
        node = field.annotation
    return field is not None and field.is_required() is False and "None" in str(field.annotation)


def param_values_from_config(cfg: PairflowConfig) -> dict[str, Any]:
    """The flat pipeline argument values corresponding to ``cfg``."""
    data = cfg.to_dict()
    out: dict[str, Any] = {}
    for param in pipeline_params():
        node: Any = data
        for part in param.path:
            node = node[part]
        out[param.name] = "" if node is None else node
    return out
