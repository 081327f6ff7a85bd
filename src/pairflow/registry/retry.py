"""The registry's errors, and which MLflow failures are transient.

pairflow does not retry MLflow calls itself: MLflow's own HTTP retries (``mlflow.http_*``,
applied by :func:`pairflow.tracking.apply_http_policy`) retry each request, and on a cluster
KFP retries the step (``kubeflow.io_retries``). A transient failure that outlived MLflow's
retries becomes :class:`RegistryUnavailable` (:meth:`pairflow.registry.client.Registry.call`).
"""

from __future__ import annotations

from pairflow.errors import PairflowError

# MLflow error codes that mean "the request was understood and refused": retrying is useless.
_PERMANENT_CODES = frozenset(
    {
        "RESOURCE_DOES_NOT_EXIST",
        "RESOURCE_ALREADY_EXISTS",
        "INVALID_PARAMETER_VALUE",
        "INVALID_STATE",
        "BAD_REQUEST",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "NOT_FOUND",
    }
)


class RegistryError(PairflowError):
    """A registry operation that cannot be done as asked (unknown model, bad version...)."""


class RegistryUnavailable(RegistryError):
    """MLflow did not answer (or kept failing) after all of MLflow's HTTP retries."""


class GovernanceError(RegistryError):
    """An alias change refused by the promotion rules (gate, approval, incomplete version)."""


def is_transient(exc: BaseException) -> bool:
    """True for connection failures and server-side errors, False for refused requests."""
    # lazy: mlflow (slow to import); only this path needs it
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return exc.error_code not in _PERMANENT_CODES
    return isinstance(exc, OSError | ConnectionError | TimeoutError) or type(
        exc
    ).__module__.startswith(("requests", "urllib3"))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__
