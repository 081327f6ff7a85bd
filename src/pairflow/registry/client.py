"""An MLflow registry client whose failures read as registry errors (see :mod:`.retry`).

Each HTTP request is retried by MLflow itself under ``mlflow.http_*``
(:func:`pairflow.tracking.apply_http_policy`); :meth:`Registry.call` adds no retries.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, TypeVar

from pairflow import tracking
from pairflow.config import MlflowConfig
from pairflow.registry.retry import RegistryError, RegistryUnavailable, first_line, is_transient

T = TypeVar("T")


class Registry:
    """``MlflowClient`` for ``tracking_uri`` (a resolved URI: see :mod:`pairflow.tracking`)."""

    def __init__(self, tracking_uri: str) -> None:
        # lazy: mlflow (slow to import); only this path needs it
        from mlflow.tracking import MlflowClient

        if not tracking_uri:
            raise tracking.TrackingConfigError(
                "mlflow.tracking_uri is empty: resolve the config first "
                "(pairflow.tracking.resolve_mlflow_settings)"
            )
        self.tracking_uri = tracking_uri
        self.client: Any = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    @classmethod
    def from_config(cls, m: MlflowConfig) -> Registry:
        """A client of ``m.tracking_uri`` with ``m``'s HTTP retry policy applied."""
        tracking.apply_http_policy(m)
        return cls(m.tracking_uri)

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """``fn()``; a transient failure (one that outlived MLflow's HTTP retries) is raised as
        :class:`RegistryUnavailable` naming ``what``, a refused request as it is."""
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            attempts = tracking.http_attempts(self.tracking_uri)
            raise RegistryUnavailable(
                f"MLflow: {what} failed after {attempts} attempt{'s' if attempts > 1 else ''} "
                f"({first_line(exc)})"
            ) from exc

    def model_version(self, name: str, version: str | int) -> Any:
        """The version (aliases and tags populated); a clear error when it does not exist."""
        # lazy: mlflow (slow to import); only this path needs it
        from mlflow.exceptions import MlflowException

        try:
            return self.call(
                f"get {name}/{version}", lambda: self.client.get_model_version(name, str(version))
            )
        except MlflowException as exc:
            raise RegistryError(f"models:/{name}/{version}: no such model version") from exc

    def alias_version(self, name: str, alias: str) -> Any | None:
        """The version ``alias`` points at, or None when the alias is not set."""
        # lazy: mlflow (slow to import); only this path needs it
        from mlflow.exceptions import MlflowException

        try:
            return self.call(
                f"get {name}@{alias}",
                lambda: self.client.get_model_version_by_alias(name, alias),
            )
        except MlflowException:
            return None

    def registered_model(self, name: str) -> Any:
        # lazy: mlflow (slow to import); only this path needs it
        from mlflow.exceptions import MlflowException

        try:
            return self.call(f"get {name}", lambda: self.client.get_registered_model(name))
        except MlflowException as exc:
            raise RegistryError(f"{name}: no such registered model") from exc

    def resolve(self, ref: str) -> Any:
        """``NAME``, ``NAME@ALIAS``, ``NAME/VERSION`` (optionally ``models:/``) → a version.

        ``NAME`` alone means its champion, else its latest version.
        """
        ref = ref.removeprefix("models:/")
        if "@" in ref:
            name, alias = ref.split("@", 1)
            found = self.alias_version(name, alias)
            if found is None:
                raise RegistryError(f"models:/{name}@{alias}: alias not set")
            return found
        if "/" in ref:
            name, version = ref.split("/", 1)
            return self.model_version(name, version)
        champion = self.alias_version(ref, "champion")
        if champion is not None:
            return champion
        versions = self.versions(ref)
        if not versions:
            raise RegistryError(f"{ref}: no versions registered")
        return self.model_version(ref, versions[-1].version)

    def _search(self, query: str, token: str | None) -> Any:
        return self.client.search_model_versions(query, page_token=token)

    def versions(self, name: str, filter_extra: str = "") -> list[Any]:
        """All versions of ``name`` (oldest first), optionally filtered further."""
        query = f"name='{name}'" + (f" and {filter_extra}" if filter_extra else "")
        found: list[Any] = []
        token: str | None = None
        while True:
            page = self.call(f"search versions of {name}", partial(self._search, query, token))
            found.extend(page)
            token = page.token
            if not token:
                break
        return sorted(found, key=lambda v: int(v.version))
