"""release.yml: dev on main with a waited smoke run, prod promotion behind an environment
approval, secrets only through ``${{ secrets.* }}``, and only CLI options that exist."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import typer.main
import yaml

from pairflow.cli import app

REPO = Path(__file__).resolve().parents[2]


def _workflow() -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load((REPO / ".github/workflows/release.yml").read_text())
    return data


def test_release_flow_dev_on_main_then_prod_on_approval() -> None:
    wf = _workflow()
    triggers = wf[True]  # YAML 1.1 reads the key "on" as True
    assert triggers["push"]["branches"] == ["main"] and "v*" in triggers["push"]["tags"]
    assert "workflow_dispatch" in triggers
    jobs = wf["jobs"]
    assert "refs/heads/main" in jobs["dev"]["if"]
    assert jobs["promote"]["environment"] == "production"
    assert "refs/tags/v" in jobs["promote"]["if"]
    assert jobs["dev"]["needs"] == ["compile", "image"] and jobs["promote"]["needs"] == "compile"
    # the runtime image is built and pushed on main; dev and prod run it by digest
    pushed = next(s for s in jobs["image"]["steps"] if s.get("id") == "push")
    assert pushed["with"]["file"] == "images/runtime/Dockerfile" and pushed["with"]["push"]
    assert jobs["image"]["outputs"]["digest"] == "${{ steps.push.outputs.digest }}"
    for job in ("dev", "promote"):
        runs = " ".join(s.get("run", "") for s in jobs[job]["steps"])
        assert "kubeflow.base_image=${RUNTIME_IMAGE}@" in runs, job
        assert runs.count('--package "$RUNNER_TEMP/retrain.yaml"') >= 1, job
    dev_runs = " ".join(s.get("run", "") for s in jobs["dev"]["steps"])
    assert "pairflow submit" in dev_runs and "--wait" in dev_runs
    assert "pairflow promote-pipeline" in " ".join(
        s.get("run", "") for s in jobs["promote"]["steps"]
    )
    compile_runs = " ".join(s.get("run", "") for s in jobs["compile"]["steps"])
    assert "diff" in compile_runs and "pipelines/compiled/retrain.yaml" in compile_runs


def test_tokens_and_hosts_come_only_from_github_secrets() -> None:
    text = (REPO / ".github/workflows/release.yml").read_text()
    for job in _workflow()["jobs"].values():
        for key, value in job.get("env", {}).items():
            if re.search(r"TOKEN|HOST", key):
                assert re.fullmatch(r"\$\{\{ secrets\.[A-Z_]+ \}\}", value), (key, value)
    assert not re.search(r"(token|password)\s*[:=]\s*['\"]?[A-Za-z0-9]{12,}", text, re.I)


def test_workflow_uses_only_existing_cli_options() -> None:
    cli = typer.main.get_command(app)
    assert isinstance(cli, typer.core.TyperGroup)
    for job in _workflow()["jobs"].values():
        for step in job["steps"]:
            run = step.get("run", "")
            for match in re.finditer(
                r"pairflow ([a-z-]+)([^\n]*(?:\n(?!\s*pairflow)[^\n]*)*)", run
            ):
                command = cli.commands[match.group(1)]
                known = {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
                for word in shlex.split(match.group(2).replace("\n", " "), posix=True):
                    if word.startswith("--"):
                        assert word.split("=")[0] in known, (match.group(1), word)
    promote = cli.commands["promote-pipeline"]
    assert {"--from", "--to"} <= {o for p in promote.params for o in p.opts}
