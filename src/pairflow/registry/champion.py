"""The champion: the model version serving today (``models:/NAME@champion``) and the drift
reference its run carries.

The register step attaches this run's reference Parquet to the registered version's run
under :data:`DRIFT_REFERENCE_ARTIFACT`; the next evaluation fetches it from there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pairflow import tracking
from pairflow.config import PairflowConfig
from pairflow.errors import PairflowError
from pairflow.models.errors import ModelLoadError

log = logging.getLogger("pairflow.registry.champion")

CHAMPION_ALIAS = "champion"
DRIFT_REFERENCE_ARTIFACT = "pairflow/drift_reference.parquet"
"""Artifact path, inside the champion version's MLflow run, of its drift reference."""
DRIFT_REFERENCE_FILE = "drift_reference.parquet"
SERVING_REFERENCE_ARTIFACT = "pairflow/serving_reference.parquet"
"""Artifact path, inside a version's MLflow run, of its serving reference (this run's rows
embedded and scored by the version's own model: the drift monitor's baseline)."""


class ChampionLookupError(PairflowError):
    """MLflow could not be asked about the champion (unreachable, denied, malformed)."""


@dataclass(frozen=True)
class Champion:
    """The model to beat: by default the registered version holding the champion alias.

    ``ref`` is set for an explicitly given champion (``pairflow evaluate --champion REF``):
    a directory, ``s3://`` prefix or any ``models:/`` URI.
    """

    name: str
    version: str
    run_id: str | None
    ref: str | None = None

    @property
    def uri(self) -> str:
        return self.ref or champion_uri(self.name)

    @property
    def label(self) -> str:
        """``models:/m@champion v3`` or just the reference when there is no version."""
        return f"{self.uri} (v{self.version})" if self.version else self.uri


def champion_uri(name: str) -> str:
    return f"models:/{name}@{CHAMPION_ALIAS}"


def _client(tracking_uri: str) -> Any:
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def find_champion(tracking_uri: str, name: str) -> Champion | None:
    """The version of ``name`` aliased ``champion``; None when the model or alias is absent.

    Any other MLflow failure is a :class:`ChampionLookupError` naming the model and URI.
    """
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow.exceptions import MlflowException

    client = _client(tracking_uri)
    try:
        try:
            model = client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        aliases = dict(getattr(model, "aliases", None) or {})
        if CHAMPION_ALIAS not in aliases:
            return None
        version = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    except MlflowException as exc:
        raise ChampionLookupError(
            f"{champion_uri(name)}: cannot look up the champion at MLflow "
            f"{tracking.redact_uri(tracking_uri)} ({_first_line(exc)})"
        ) from exc
    return Champion(name=name, version=str(version.version), run_id=version.run_id or None)


def resolve_champion(ref: str, tracking_uri: str) -> Champion:
    """An explicitly given champion: ``models:/NAME@ALIAS`` / ``models:/NAME/VERSION`` is
    looked up in MLflow (its run carries the drift reference); anything else (a directory,
    an ``s3://`` prefix) is taken as is, its drift reference read from
    ``REF/drift_reference.parquet`` when present.
    """
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow.exceptions import MlflowException

    if not ref.startswith("models:/"):
        return Champion(name=ref, version="", run_id=None, ref=ref)
    body = ref[len("models:/") :].strip("/")
    name, alias, version = body, "", ""
    if "@" in body:
        name, alias = body.split("@", 1)
    elif "/" in body:
        name, version = body.rsplit("/", 1)
    if not name or not (alias or version):
        raise ChampionLookupError(
            f"--champion {ref}: expected models:/NAME@ALIAS or models:/NAME/VERSION"
        )
    client = _client(tracking_uri)
    try:
        mv = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, version)
        )
    except MlflowException as exc:
        raise ChampionLookupError(
            f"--champion {ref}: not found at MLflow {tracking.redact_uri(tracking_uri)} "
            f"({_first_line(exc)})"
        ) from exc
    return Champion(name=name, version=str(mv.version), run_id=mv.run_id or None, ref=ref)


def fetch_reference(tracking_uri: str, champion: Champion, dst_dir: Path) -> Path | None:
    """Download the champion's drift reference; None (logged) when its run has none."""
    # lazy: mlflow (slow to import); only this path needs it
    import mlflow
    from mlflow.exceptions import MlflowException

    if champion.run_id is None:
        local = Path(champion.ref or "") / DRIFT_REFERENCE_FILE
        return local if champion.ref and local.is_file() else None
    dst_dir.mkdir(parents=True, exist_ok=True)
    try:
        path = mlflow.artifacts.download_artifacts(
            run_id=champion.run_id,
            artifact_path=DRIFT_REFERENCE_ARTIFACT,
            dst_path=str(dst_dir),
            tracking_uri=tracking_uri,
        )
    except (MlflowException, OSError) as exc:
        log.warning(
            "champion %s v%s: no drift reference at %s in run %s (%s)",
            champion.name,
            champion.version,
            DRIFT_REFERENCE_ARTIFACT,
            champion.run_id,
            _first_line(exc),
        )
        return None
    found = Path(path)
    return found if found.is_file() else None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def champion_variant(cfg: PairflowConfig, ref: str | None = None) -> tuple[Path, str] | None:
    """The champion's shipped variant (folder, kind) for the latency budget; None when there
    is no champion (first run) or it is not a registered compress variant. ``ref``: a
    ``models:/`` URI instead of the champion alias."""
    # lazy: boto3, botocore (slow to import); only this path needs it
    from pairflow.models.locate import locate_model, registered_variant

    uri = cfg.mlflow.tracking_uri
    alias = ref or f"models:/{cfg.register_.model_name}@{cfg.deploy.alias_champion}"
    try:  # the files only: the latency worker loads the variant itself
        loc = locate_model(alias, tracking_uri=uri)
    except ModelLoadError as exc:
        log.info("no champion for the latency budget (%s)", exc)
        return None
    pinned = loc.pinned
    found = registered_variant(loc.root) if loc.root is not None else None
    if found is None:
        log.warning("champion %s is not a registered variant: no latency budget", pinned)
        return None
    name, kind, folder, _ = found
    log.info("latency budget against champion %s (%s, %s)", pinned, name, kind)
    return folder, kind
