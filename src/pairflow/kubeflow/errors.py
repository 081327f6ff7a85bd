"""User-facing errors of the Kubeflow commands (exit code 2 through the CLI)."""

from __future__ import annotations

from pairflow.errors import PairflowError


class KubeflowError(PairflowError):
    """A KFP endpoint, package or request that cannot be used as asked."""


class KfpAuthError(KubeflowError):
    """No usable credentials for a KFP endpoint."""


class PackageError(KubeflowError):
    """The compiled pipeline package is missing, unreadable or does not match."""
