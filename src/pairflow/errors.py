"""User-facing errors: one line naming the input and the problem, CLI exit code 2."""

from __future__ import annotations


class PairflowError(Exception):
    """An error caused by the user's input (file, key, value), not by a bug.

    The CLI prints ``str(error)`` on one line and exits with code 2; a traceback is
    shown only with ``--debug``.
    """

    exit_code = 2


class ConfigError(PairflowError):
    """Unknown config key, bad value or bad ``--set`` syntax."""


class InputDataError(PairflowError):
    """A manifest, dataset or image source that cannot be read as asked."""


class ConservationError(PairflowError):
    """A stage report where rows in != rows out + rows rejected."""
