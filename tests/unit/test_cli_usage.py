"""Every command of the CLI answers a usage mistake with one line on stderr and exit code 2.

The commands are walked from the typer app itself, so a command added later is covered too.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
import typer.main
from typer._click.core import Command
from typer.core import TyperGroup

from pairflow.cli import app, main


def _leaf_commands() -> Iterator[tuple[list[str], Command]]:
    def walk(cmd: Command, path: list[str]) -> Iterator[tuple[list[str], Command]]:
        if isinstance(cmd, TyperGroup):
            for name, sub in sorted(cmd.commands.items()):
                yield from walk(sub, [*path, name])
        else:
            yield path, cmd

    yield from walk(typer.main.get_command(app), [])


COMMANDS = list(_leaf_commands())
IDS = [" ".join(path) for path, _ in COMMANDS]


def _call(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    old = sys.argv
    sys.argv = ["pairflow", *args]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        sys.argv = old
    out = capsys.readouterr()
    return int(exit_info.value.code or 0), out.out, out.err


def _one_line(code: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_the_walk_sees_every_command_family() -> None:
    names = {path[0] for path, _ in COMMANDS}
    assert {"demo", "run", "validate", "registry", "data", "ui"} <= names
    assert ["registry", "promote"] in [path for path, _ in COMMANDS]


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=IDS)
def test_unknown_option_is_one_line(
    path: list[str], cmd: Command, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _call([*path, "--no-such-option-xyz"], capsys)
    line = _one_line(code, err)
    assert line.startswith(f"error: pairflow {' '.join(path)}: no such option")
    assert "--no-such-option-xyz" in line


@pytest.mark.parametrize(
    ("path", "cmd"),
    [(p, c) for p, c in COMMANDS if any(x.required for x in c.params)],
    ids=[i for i, (_, c) in zip(IDS, COMMANDS, strict=True) if any(x.required for x in c.params)],
)
def test_missing_required_is_one_line(
    path: list[str], cmd: Command, capsys: pytest.CaptureFixture[str]
) -> None:
    required = [x for x in cmd.params if x.required]
    # Nothing given: the first required parameter is named.
    code, _, err = _call(path, capsys)
    line = _one_line(code, err)
    assert "missing" in line
    # Arguments given, options left out: the missing option is named.
    args = ["1" for x in cmd.params if x.param_type_name == "argument" and x.required]
    options = [x for x in required if x.param_type_name == "option"]
    if args and options:
        code, _, err = _call([*path, *args], capsys)
        line = _one_line(code, err)
        assert f"missing option {options[0].opts[0]}" in line


def test_typo_gets_the_nearest_option(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _call(["validate", "--inptu", "x"], capsys)
    assert "did you mean --input?" in _one_line(code, err)


def test_bad_value_and_missing_argument(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _call(["data", "generate", "--out", "x", "--n", "abc"], capsys)
    assert "invalid value for --n" in _one_line(code, err)
    code, _, err = _call(["registry", "promote"], capsys)
    assert "missing argument NAME" in _one_line(code, err)
    code, _, err = _call(["registry", "promote", "pairflow-clip", "3"], capsys)
    assert "missing option --reason" in _one_line(code, err)


def test_debug_shows_the_usage_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pairflow.cli", "--debug", "validate", "--inptu", "x"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
    assert "NoSuchOption" in proc.stderr
