"""Retries with exponential backoff for MLflow calls, and the registry's errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from pairflow.errors import PairflowError

log = logging.getLogger("pairflow.registry")

T = TypeVar("T")

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
    """MLflow did not answer (or kept failing) after all retries."""


class GovernanceError(RegistryError):
    """An alias change refused by the promotion rules (gate, approval, incomplete version)."""


def is_transient(exc: BaseException) -> bool:
    """True for connection failures and server-side errors, False for refused requests."""
    from mlflow.exceptions import MlflowException

    if isinstance(exc, MlflowException):
        return exc.error_code not in _PERMANENT_CODES
    return isinstance(exc, OSError | ConnectionError | TimeoutError) or type(
        exc
    ).__module__.startswith(("requests", "urllib3"))


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def with_retries(
    fn: Callable[[], T],
    what: str,
    retries: int,
    backoff_s: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``fn``; on a transient failure retry ``retries`` times (delays double each time).

    A permanent failure is raised at once; the last transient one as :class:`RegistryUnavailable`.
    """
    for attempt in range(retries + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt == retries:
                raise RegistryUnavailable(
                    f"MLflow: {what} failed after {attempt + 1} attempts ({first_line(exc)})"
                ) from exc
            delay = backoff_s * 2**attempt
            log.warning(
                "MLflow: %s failed (attempt %d/%d, %s); retrying in %.1f s",
                what,
                attempt + 1,
                retries + 1,
                first_line(exc),
                delay,
            )
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
