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
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from pairflow.compress.settings import CompressConfig
from pairflow.config_fields import UI_FLAG, Section, ui
from pairflow.deploy.settings import DeployConfig
from pairflow.errors import ConfigError
from pairflow.evaluate.settings import EvaluateConfig
from pairflow.kubeflow.settings import KubeflowConfig
from pairflow.monitor.settings import MonitorConfig
from pairflow.registry.settings import RegisterConfig
from pairflow.serve.settings import ServeConfig
from pairflow.train.settings import TrainConfig

ImageFormat = Literal["JPEG", "PNG", "WEBP"]


class S3Config(Section):
    endpoint_url: str | None = ui(
        None,
        "S3 endpoint URL",
        "S3-compatible endpoint (MinIO, moto); empty for AWS S3. Credentials come from the "
        "environment (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a role), never from config.",
    )
    region: str = "us-east-1"


class DataConfig(Section):
    source: str = ui(
        "",
        "Data source",
        "Where the raw pairs are: a folder of images + captions, a .parquet/.jsonl manifest, a "
        "folder of WebDataset .tar shards, or an s3:// URI of any of these.",
    )
    format: Literal["auto", "folder", "parquet", "jsonl", "webdataset"] = ui(
        "auto", "Source format", "How to read the source; 'auto' decides from the URI."
    )
    shards: int = ui(
        2,
        "Shards",
        "Number of shards the data stages fan out over (dsl.ParallelFor).",
        ge=1,
        le=256,
    )
    s3: S3Config = Field(default_factory=S3Config)
    ground_truth: str = Field(
        "",
        description="Known-defect table of synthetic data (ground_truth.parquet); when set, "
        "reports measure against it (e.g. clip-filter ROC-AUC). `pairflow demo` sets it.",
    )


class ContractConfig(Section):
    """Dataset-level Great Expectations contract, checked on all validated rows together."""

    min_rows: int = ui(10, "Min rows", "Fewer kept rows than this fails the step.", ge=1)
    max_reject_share: float = ui(
        0.5, "Max reject share", "A larger share of rejected rows fails the step.", ge=0, le=1
    )
    max_null_share: dict[str, float] = Field(
        default_factory=lambda: {"id": 0.0, "image": 0.0, "caption": 0.0},
        description="Per column: the largest share of nulls tolerated among kept rows.",
    )
    allowed_sources: list[str] | None = Field(
        None, description="Value set for the 'source' column; None skips the expectation."
    )
    caption_chars_mean: tuple[float, float] = Field(
        (5.0, 300.0), description="Bounds on the mean caption length (characters)."
    )
    caption_chars_p95_max: float = Field(
        500.0, description="Upper bound on the 95th percentile of caption length."
    )


class ValidateConfig(Section):
    """Per-row checks; every failure is a rejected row with a reason code and a detail."""

    allowed_formats: list[ImageFormat] = Field(default_factory=lambda: list(get_args(ImageFormat)))
    min_width: int = ui(16, "Min image width", "Images narrower than this are rejected.", ge=1)
    min_height: int = ui(16, "Min image height", "Images shorter than this are rejected.", ge=1)
    max_width: int = Field(8192, ge=1)
    max_height: int = Field(8192, ge=1)
    max_aspect_ratio: float = Field(4.0, ge=1.0, description="max(w/h, h/w) allowed.")
    max_pixels: int = Field(
        40_000_000, ge=1, description="Declared w*h above this is rejected before decoding."
    )
    max_file_bytes: int = Field(20_000_000, ge=1)
    min_caption_chars: int = ui(3, "Min caption length", "Shorter captions are rejected.", ge=0)
    max_caption_chars: int = Field(1000, ge=1)
    min_caption_tokens: int = Field(1, ge=0)
    max_caption_tokens: int = Field(77, ge=1, description="CLIP's context length by default.")
    min_printable_ratio: float = Field(0.95, ge=0, le=1)
    min_letter_ratio: float = Field(
        0.5, ge=0, le=1, description="Share of letters and spaces among caption characters."
    )
    blocked_words: list[str] = Field(default_factory=list)
    allowed_labels: list[str] | None = Field(
        None, description="When set, rows whose label is not in the set are rejected."
    )
    workers: int = Field(0, ge=0, description="Decode processes per shard; 0 = CPU count.")
    contract: ContractConfig = Field(default_factory=ContractConfig)

    @model_validator(mode="after")
    def _bounds(self) -> ValidateConfig:
        if self.min_width > self.max_width or self.min_height > self.max_height:
            raise ValueError("validate: min width/height must not exceed max")
        if self.min_caption_chars > self.max_caption_chars:
            raise ValueError("validate: min_caption_chars must not exceed max_caption_chars")
        return self


class DedupeConfig(Section):
    """Exact, perceptual and caption duplicates; which copy survives is deterministic."""

    exact: bool = ui(True, "Exact duplicates", "Drop byte-identical images.")
    near: bool = ui(True, "Near duplicates", "Drop perceptual-hash near duplicates.")
    phash_max_distance: int = ui(
        8,
        "Near-duplicate distance",
        "Max Hamming distance of 64-bit layout hashes (full frame or centre crop).",
        ge=0,
        le=16,
    )
    near_layout_max_rms: float = Field(
        2.9,
        gt=0,
        description="Hash candidates are near duplicates when their colour-layout RMS distance "
        "is at most this (tuned on the generator: recall 96% at 0 false positives, 600 rows).",
    )
    near_photometric: bool = Field(
        True,
        description="Also accept DCT-hash candidates that differ by brightness/contrast, "
        "a small overlay or crop (pairflow.dedupe.near.PhotometricRule; real photographs).",
    )
    captions: bool = ui(
        True, "Duplicate captions", "Drop rows whose normalised caption repeats another's."
    )
    near_captions: bool = Field(False, description="Also MinHash-LSH near-duplicate captions.")
    minhash_threshold: float = Field(0.9, gt=0, le=1, description="Jaccard threshold.")
    minhash_num_perm: int = Field(64, ge=16, le=512)
    embeddings: bool = Field(
        False, description="SemDeDup on CLIP embeddings (needs clip-filter embeddings)."
    )
    embedding_epsilon: float = Field(0.05, gt=0, lt=1, description="Drop cosine > 1 - eps.")
    embedding_clusters: int = Field(16, ge=1)
    threads: int = Field(
        0,
        ge=0,
        description="Threads for the near-duplicate index and its verification "
        "(0: every CPU the step may use).",
    )


class ClipFilterConfig(Section):
    """Score pairs by CLIP image-text cosine; keep by threshold or top fraction."""

    model: str = ui(
        "",
        "CLIP model reference",
        "HF id, local directory, s3:// prefix or models:/NAME@ALIAS (required; `pairflow demo` "
        "sets its locally pretrained model).",
    )
    threshold: float = ui(
        0.28, "CLIP score threshold", "Keep pairs whose image-text cosine is at least this."
    )
    top_fraction: float = ui(
        0.0,
        "Keep top fraction",
        "If > 0, keep this fraction of best-scoring pairs instead of using the threshold.",
        ge=0.0,
        le=1.0,
    )
    source_thresholds: dict[str, float] = Field(
        default_factory=dict, description="Per-'source' thresholds overriding `threshold`."
    )
    batch_size: int = ui(64, "CLIP batch size", "Pairs per forward pass.", ge=1)
    num_workers: int = Field(2, ge=0, description="DataLoader workers decoding images.")
    torch_threads: int = Field(0, ge=0, description="Intra-op threads; 0 = all CPUs.")
    read_retries: int = Field(3, ge=0, description="Retries for transient image read errors.")


class MlflowConfig(Section):
    tracking_uri: str = ui(
        "",
        "MLflow tracking URI",
        "Empty: $MLFLOW_TRACKING_URI, else sqlite:///<workdir>/mlflow.db.",
    )
    experiment: str = ui("pairflow-retrain", "MLflow experiment", "Experiment for run records.")


class RunConfig(Section):
    """Local runs (kfp.local): work dir, seed, and how hard to retry failing steps."""

    workdir: str = ui(
        ".pairflow",
        "Work directory",
        "Local runs: where outputs and the default sqlite MLflow store live.",
    )
    seed: int = ui(0, "Seed", "Global random seed.")
    local_io_retries: int = Field(
        1, ge=0, description="kubeflow.io_retries for local runs: fail fast while iterating."
    )


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
