"""Promotion rules, promotion history and the registry CLI on a real sqlite MLflow store.

Versions are created directly with the MLflow client (a folder as their source) so each test
sets up exactly the tags the rules read; the register step itself is covered by
tests/integration/test_registry_server.py.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pairflow.cli import app
from pairflow.registry import names
from pairflow.registry.client import Registry
from pairflow.registry.governance import (
    approve,
    champion_drift,
    deploy_blockers,
    move_alias,
    promote,
    rollback,
)
from pairflow.registry.history import append_event, read_history
from pairflow.registry.retry import GovernanceError

NAME = "gov"


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """One sqlite store per module (creating its schema takes seconds)."""
    db = tmp_path_factory.mktemp("registry") / "mlflow.db"
    return Registry(f"sqlite:///{db}")


@pytest.fixture
def reg(store: Registry) -> Iterator[Registry]:
    """The store with a fresh registered model ``NAME`` (deleted with its versions after)."""
    store.client.create_registered_model(NAME)
    yield store
    store.client.delete_registered_model(NAME)


def _version(reg: Registry, tmp_path: Path, gate: str, complete: bool = True) -> str:
    src = tmp_path / f"src-{gate}"
    src.mkdir(exist_ok=True)
    mv = reg.client.create_model_version(
        NAME,
        source=str(src),
        tags={names.TAG_GATE: gate, names.TAG_COMPLETE: "true" if complete else "false"},
    )
    return str(mv.version)


def _alias(reg: Registry, alias: str) -> str | None:
    found = reg.alias_version(NAME, alias)
    return None if found is None else str(found.version)


def test_promote_then_rollback_moves_aliases_and_records_history(
    reg: Registry, tmp_path: Path
) -> None:
    v1, v2 = _version(reg, tmp_path, "passed"), _version(reg, tmp_path, "passed")
    promote(reg, NAME, v1, reason="first", actor="alice", policy="auto")
    change = promote(reg, NAME, v2, reason="canary ok", actor="deploy:run-7", policy="auto")
    assert (change.champion_from, change.champion_to, change.previous) == (v1, v2, v1)
    assert (_alias(reg, "champion"), _alias(reg, "previous")) == (v2, v1)
    back = rollback(reg, NAME, reason="latency regression", actor="bob")
    assert back.champion_to == v1 and _alias(reg, "champion") == v1
    assert _alias(reg, "previous") is None
    events = [(e.alias, e.from_, e.to, e.actor, e.reason) for e in read_history(reg, NAME)]
    assert events == [
        ("champion", None, v1, "alice", "first"),
        ("previous", None, v1, "deploy:run-7", "canary ok"),
        ("champion", v1, v2, "deploy:run-7", "canary ok"),
        ("champion", v2, v1, "bob", "latency regression"),
        ("previous", v1, None, "bob", "latency regression"),
    ]
    with pytest.raises(GovernanceError, match="no @previous"):
        rollback(reg, NAME, reason="again", actor="bob")


def test_challenger_leaves_a_version_once_it_is_champion(reg: Registry, tmp_path: Path) -> None:
    v1, v2 = _version(reg, tmp_path, "passed"), _version(reg, tmp_path, "passed")
    move_alias(
        reg,
        NAME,
        "challenger",
        reg.model_version(NAME, v1),
        actor="register",
        kind="gate",
        reason="gate passed",
    )
    promote(reg, NAME, v2, reason="manual pick", actor="alice", policy="auto")
    assert _alias(reg, "challenger") == v1  # another version's promotion leaves it alone
    promote(reg, NAME, v1, reason="canary ok", actor="deploy", policy="auto")
    assert _alias(reg, "champion") == v1 and _alias(reg, "challenger") is None
    assert reg.model_version(NAME, v1).aliases == ["champion"]
    last = read_history(reg, NAME)[-1]
    assert (last.alias, last.from_, last.to, last.actor) == ("challenger", v1, None, "deploy")
    assert last.reason == f"v{v1} became @champion: canary ok"


@pytest.mark.parametrize("gate", ["failed", "not_enforced", "unknown"])
def test_no_alias_points_at_a_version_without_a_passed_gate(
    reg: Registry, tmp_path: Path, gate: str
) -> None:
    bad = _version(reg, tmp_path, gate)
    with pytest.raises(GovernanceError, match=f"gate is {gate}"):
        promote(reg, NAME, bad, reason="x", actor="a", policy="auto")
    mv = reg.model_version(NAME, bad)
    with pytest.raises(GovernanceError, match="refusing to set @challenger"):
        move_alias(reg, NAME, "challenger", mv, actor="a", kind="gate", reason="x")
    assert reg.registered_model(NAME).aliases == {}
    assert read_history(reg, NAME) == []


def test_incomplete_version_is_refused(reg: Registry, tmp_path: Path) -> None:
    half = _version(reg, tmp_path, "passed", complete=False)
    with pytest.raises(GovernanceError, match="registration did not complete"):
        promote(reg, NAME, half, reason="x", actor="a", policy="auto")


def test_rollback_never_restores_a_failed_version(reg: Registry, tmp_path: Path) -> None:
    good, bad = _version(reg, tmp_path, "passed"), _version(reg, tmp_path, "failed")
    promote(reg, NAME, good, reason="ok", actor="a", policy="auto")
    reg.client.set_registered_model_alias(NAME, "previous", bad)  # set behind pairflow's back
    with pytest.raises(GovernanceError, match="gate is failed"):
        rollback(reg, NAME, reason="x", actor="a")
    assert _alias(reg, "champion") == good


def test_manual_policy_needs_an_approval(reg: Registry, tmp_path: Path) -> None:
    v = _version(reg, tmp_path, "passed")
    with pytest.raises(GovernanceError, match="no approval"):
        promote(reg, NAME, v, reason="x", actor="a", policy="manual")
    uri = f"models:/{NAME}/{v}"
    assert deploy_blockers(reg, uri, "manual") == [
        "manual policy: no approval (pairflow registry approve NAME VERSION)"
    ]
    assert deploy_blockers(reg, uri, "auto") == []
    approval = approve(reg, NAME, v, by="carol", comment="card reviewed")
    assert approval.by == "carol" and deploy_blockers(reg, uri, "manual") == []
    promote(reg, NAME, v, reason="ship it", actor="carol", policy="manual")
    assert _alias(reg, "champion") == v
    (event,) = read_history(reg, NAME)
    assert event.reason == "ship it (approved by carol: card reviewed)"


def test_champion_moved_outside_pairflow_is_detected(reg: Registry, tmp_path: Path) -> None:
    v1, v2 = _version(reg, tmp_path, "passed"), _version(reg, tmp_path, "passed")
    promote(reg, NAME, v1, reason="ok", actor="a", policy="auto")
    assert champion_drift(reg, NAME, read_history(reg, NAME)) is None
    reg.client.set_registered_model_alias(NAME, "champion", v2)
    warning = champion_drift(reg, NAME, read_history(reg, NAME))
    assert warning is not None and f"is {v2} but the promotion history says {v1}" in warning


def test_concurrent_appends_lose_no_event(reg: Registry) -> None:
    def worker(i: int) -> None:
        for j in range(5):
            append_event(
                reg,
                NAME,
                alias="champion",
                from_version=None,
                to_version=str(i),
                actor=f"w{i}",
                kind="test",
                reason=f"{i}-{j}",
            )

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reasons = sorted(e.reason for e in read_history(reg, NAME))
    assert reasons == sorted(f"{i}-{j}" for i in range(4) for j in range(5))


def test_cli_promote_refuses_then_history_prints(reg: Registry, tmp_path: Path) -> None:
    good, bad = _version(reg, tmp_path, "passed"), _version(reg, tmp_path, "failed")
    uri = ["--tracking-uri", reg.tracking_uri]
    runner = CliRunner()
    refused = runner.invoke(app, ["registry", "promote", NAME, bad, "--reason", "x", *uri])
    # a PairflowError: pairflow.cli.main prints it on one line and exits 2
    assert isinstance(refused.exception, GovernanceError)
    assert "gate is failed" in str(refused.exception)
    manual = ["--set", "register.policy=manual"]
    blocked = runner.invoke(
        app, ["registry", "promote", NAME, good, "--reason", "x", "--by", "dan", *manual, *uri]
    )
    assert isinstance(blocked.exception, GovernanceError)
    assert "no approval" in str(blocked.exception)
    ok = runner.invoke(
        app, ["registry", "approve", NAME, good, "--by", "erin", "--comment", "fine", *uri]
    )
    assert ok.exit_code == 0, ok.output
    done = runner.invoke(
        app,
        ["registry", "promote", NAME, good, "--reason", "reviewed", "--by", "dan", *manual, *uri],
    )
    assert done.exit_code == 0, done.output
    assert _alias(reg, "champion") == good
    hist = runner.invoke(app, ["registry", "history", NAME, *uri])
    assert hist.exit_code == 0 and "reviewed" in hist.output and "dan" in hist.output
    listing = runner.invoke(app, ["registry", "list", NAME, *uri])
    assert "champion" in listing.output and "erin" in listing.output


def test_deploy_decision_puts_the_canary_on_the_card(reg: Registry, tmp_path: Path) -> None:
    from pairflow.registry.card import CardInputs, build_model_card
    from pairflow.stages.deploy.aliases import Rollout, record_decision

    v = _version(reg, tmp_path, "passed")
    card = build_model_card(CardInputs(model_name=NAME, lineage={"data_snapshot": "abc"}))
    reg.client.update_model_version(NAME, v, description=card)
    report = {"steps": [{"weight": 10, "verdict": "ok"}, {"weight": 50, "verdict": "fail"}]}
    record_decision(reg, Rollout(NAME, v, None), "rolled_back", ["errors up at 50%"], report)
    desc = reg.model_version(NAME, v).description or ""
    assert desc.index("**Canary: rolled_back**") < desc.index("## Lineage")
    assert "| 50% | fail |" in desc and "- errors up at 50%" in desc
    assert desc.startswith(card[: card.index("## Lineage")])
