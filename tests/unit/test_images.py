"""Dockerfile rules, checked by parsing (no Docker engine or hadolint wheel here).

Each image: multi-stage; every base image comes from an ARG whose default is pinned by
``@sha256`` digest (or is an earlier stage); the final stage installs nothing (no apt-get, pip,
compilers), copies the built environment from a build stage, runs as a non-root USER and
declares a HEALTHCHECK (a real check where a server runs: the predictor).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
IMAGES = sorted(p.parent.name for p in (REPO / "images").glob("*/Dockerfile"))
SERVERS = {"serving"}  # images whose container serves requests: HEALTHCHECK CMD required
BUILD_TOOLS = re.compile(
    r"\b(apt-get|apt|apk|yum|dnf|pip|pip3|gcc|g\+\+|cc|make|build-essential|uv)\b"
)
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages of a Dockerfile (continuations joined)."""
    lines: list[str] = []
    buf = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        lines.append(buf + stripped)
        buf = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        op, _, rest = line.partition(" ")
        op = op.upper()
        if op == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else ""
            stages.append(Stage(words[0], name))
        elif not stages:
            if op != "ARG":
                raise ValueError(f"{op} before the first FROM")
            key, _, default = rest.partition("=")
            args[key.strip()] = default.strip()
        else:
            stages[-1].instructions.append((op, rest))
    return args, stages


def violations(text: str, server: bool) -> list[str]:
    args, stages = parse(text)
    found = []
    if len(stages) < 2:
        found.append("not multi-stage")
    names = set()
    for stage in stages:
        ref = re.fullmatch(r"\$\{?(\w+)\}?", stage.base)
        if stage.base in names:  # an earlier stage: pinned through it
            pass
        elif ref is None:
            found.append(f"FROM {stage.base}: base not taken from an ARG")
        elif not DIGEST.search(args.get(ref.group(1), "")):
            found.append(f"ARG {ref.group(1)}: default not pinned by sha256 digest")
        if stage.name:
            names.add(stage.name)
    if not stages:
        return found
    final = stages[-1]
    for op, rest in final.instructions:
        if op == "RUN" and BUILD_TOOLS.search(rest):
            found.append(f"final stage RUN uses build/install tools: {rest[:60]}")
        if op in ("ENV", "ARG") and re.search(r"(TOKEN|SECRET|PASSWORD|ACCESS_KEY)", rest):
            found.append(f"final stage {op} looks like a secret: {rest[:60]}")
    if not any(op == "COPY" and rest.startswith("--from=") for op, rest in final.instructions):
        found.append("final stage copies nothing from a build stage")
    users = [rest.split(":")[0].strip() for op, rest in final.instructions if op == "USER"]
    if not users or users[-1] in ("root", "0"):
        found.append("final stage does not switch to a non-root USER")
    checks = [rest for op, rest in final.instructions if op == "HEALTHCHECK"]
    if not checks:
        found.append("no HEALTHCHECK")
    elif server and ("CMD" not in checks[-1] or checks[-1].strip().upper() == "NONE"):
        found.append("a server image needs HEALTHCHECK CMD")
    return found


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_follows_the_rules(image: str) -> None:
    text = (REPO / "images" / image / "Dockerfile").read_text()
    assert violations(text, image in SERVERS) == []


def test_the_three_images_exist_and_build_from_the_repo_root() -> None:
    assert IMAGES == ["runtime", "serving", "trainer"]
    for image in IMAGES:
        text = (REPO / "images" / image / "Dockerfile").read_text()
        for src in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
            assert (REPO / src).exists(), (image, src)  # context is the repo root (make images)
        ignore = (REPO / "images" / image / "Dockerfile.dockerignore").read_text()
        assert ignore.splitlines()[1] == "*"  # allow-list context


def test_serving_image_runs_the_predictor_on_8080() -> None:
    text = (REPO / "images" / "serving" / "Dockerfile").read_text()
    _, stages = parse(text)
    final = dict((op, rest) for op, rest in stages[-1].instructions)
    assert final["ENTRYPOINT"] == '["pairflow", "serve"]'
    assert "8080" in final["EXPOSE"] and "8080" in final["HEALTHCHECK"]


BAD = """\
FROM python:3.11-slim
RUN apt-get update && apt-get install -y gcc && pip install pairflow
ENV KFP_TOKEN=abc
"""
ROOT_FINAL = """\
ARG BASE=python:3.11-slim@sha256:{digest}
FROM ${{BASE}} AS build
RUN pip install --no-cache-dir .
FROM ${{BASE}}
COPY --from=build /opt/venv /opt/venv
USER root
HEALTHCHECK NONE
""".format(digest="a" * 64)


def test_the_checker_catches_broken_dockerfiles() -> None:
    bad = violations(BAD, server=True)
    assert "not multi-stage" in bad
    assert any("not taken from an ARG" in v for v in bad)
    assert any("build/install tools" in v for v in bad)
    assert any("secret" in v for v in bad)
    assert "final stage does not switch to a non-root USER" in bad
    assert "no HEALTHCHECK" in bad
    root = violations(ROOT_FINAL, server=True)
    assert root == [
        "final stage does not switch to a non-root USER",
        "a server image needs HEALTHCHECK CMD",
    ]
    unpinned = ROOT_FINAL.replace("@sha256:" + "a" * 64, ":latest")
    assert any("not pinned" in v for v in violations(unpinned, server=False))
