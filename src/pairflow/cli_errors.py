"""Usage errors of the ``pairflow`` command line as one line: what is wrong, and the nearest fix.

Typer (>= 0.29) carries its own copy of click, whose usage errors print a usage block, a
"Try --help" line and the message over several lines. A person who mistyped an option needs
one line naming the command, the problem and the option they probably meant.
"""

from __future__ import annotations

import difflib

from typer._click.core import Context
from typer._click.exceptions import (
    BadParameter,
    MissingParameter,
    NoArgsIsHelpError,
    NoSuchOption,
    UsageError,
)


def _options_of(ctx: Context | None) -> list[str]:
    if ctx is None:
        return []
    names: list[str] = []
    for param in ctx.command.params:
        if getattr(param, "param_type_name", "") == "option":
            names += [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])]
    return [*names, "--help"]


def nearest(word: str, candidates: list[str]) -> str | None:
    """The candidate closest to ``word`` (a typo's most likely meaning), if any is close."""
    found = difflib.get_close_matches(word, candidates, n=1, cutoff=0.5)
    return found[0] if found else None


def _param_hint(exc: BadParameter) -> str:
    param = exc.param
    if exc.param_hint is not None:
        hint = exc.param_hint
        return hint if isinstance(hint, str) else " / ".join(hint)
    if param is None:
        return ""
    if getattr(param, "param_type_name", "") == "argument":
        return str(param.name or "").upper()
    opts = list(getattr(param, "opts", []))
    return " / ".join(opts) if opts else str(param.name)


def usage_line(exc: UsageError) -> str:
    """One line for a usage error: ``pairflow CMD: problem; hint``."""
    ctx = exc.ctx
    where = ctx.command_path if ctx is not None else "pairflow"
    help_hint = f"see '{where} --help'"
    if isinstance(exc, NoSuchOption):
        guess = nearest(exc.option_name, _options_of(ctx))
        if guess is None and exc.possibilities:
            guess = sorted(exc.possibilities)[0]
        did_you_mean = f"; did you mean {guess}?" if guess else ""
        return f"{where}: no such option {exc.option_name}{did_you_mean} ({help_hint})"
    if isinstance(exc, MissingParameter):
        hint = _param_hint(exc)
        kind = exc.param_type or (exc.param.param_type_name if exc.param is not None else "value")
        return f"{where}: missing {kind} {hint} ({help_hint})"
    if isinstance(exc, BadParameter):
        hint = _param_hint(exc)
        message = " ".join(exc.message.split())
        return f"{where}: invalid value for {hint}: {message} ({help_hint})"
    message = " ".join(exc.format_message().split())
    return f"{where}: {message} ({help_hint})"


def is_help_screen(exc: UsageError) -> bool:
    """A group called without a command: click answers with its help page, not an error line."""
    return isinstance(exc, NoArgsIsHelpError)
