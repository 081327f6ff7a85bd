"""The champion's serving reference, found through its MLflow model version.

``models:/<register.model_name>@champion`` names the version that serves; the register step
logged the evaluate step's serving reference in that version's run as
:data:`~pairflow.registry.champion.SERVING_REFERENCE_ARTIFACT` (the run's rows embedded and
scored by the version's own model), so a window of served traffic is compared like-for-like.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException

from pairflow.config import PairflowConfig
from pairflow.drift.reference import Reference, read_reference
from pairflow.errors import PairflowError
from pairflow.registry.champion import (
    CHAMPION_ALIAS,
    SERVING_REFERENCE_ARTIFACT,
    champion_uri,
    find_champion,
)
from pairflow.registry.logged_model import tracking_uri


class ChampionReferenceError(PairflowError):
    """No champion, or a champion whose run carries no serving reference."""


@dataclass(frozen=True)
class ChampionReference:
    """The serving champion and the reference its traffic is judged against."""

    model_name: str
    version: str
    run_id: str
    reference: Reference


def resolve_uri(cfg: PairflowConfig) -> str:
    """The run's tracking URI (resolved by the monitor pass or the CLI)."""
    return cfg.mlflow.tracking_uri


def load_champion_reference(cfg: PairflowConfig) -> ChampionReference:
    """The ``champion`` version of ``register.model_name`` and its serving reference."""

    uri = resolve_uri(cfg)
    name = cfg.register_.model_name
    champ = find_champion(uri, name)
    if champ is None:
        raise ChampionReferenceError(
            f"{champion_uri(name)}: no registered model {name!r} with alias "
            f"{CHAMPION_ALIAS!r} at MLflow {uri}; nothing serves, so there is nothing to judge"
        )
    if not champ.run_id:
        raise ChampionReferenceError(
            f"{champ.label}: the version has no MLflow run, so no serving reference"
        )
    with tempfile.TemporaryDirectory(prefix="pairflow-serving-ref-") as tmp:
        try:
            with tracking_uri(uri):
                path = Path(
                    mlflow.artifacts.download_artifacts(
                        run_id=champ.run_id, artifact_path=SERVING_REFERENCE_ARTIFACT, dst_path=tmp
                    )
                )
        except (MlflowException, OSError) as exc:
            raise ChampionReferenceError(
                f"{champ.label}: no serving reference {SERVING_REFERENCE_ARTIFACT} in run "
                f"{champ.run_id} ({type(exc).__name__}: {str(exc).strip().splitlines()[0]}); "
                "versions registered before the monitor existed lack it: retrain to make one"
            ) from exc
        reference = read_reference(path)
    if not reference.has_embeddings:
        raise ChampionReferenceError(
            f"{champ.label}: serving reference in run {champ.run_id} has no embeddings"
        )
    return ChampionReference(name, champ.version, champ.run_id, reference)
