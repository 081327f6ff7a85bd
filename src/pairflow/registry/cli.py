"""``pairflow registry ...``: review versions, cards, approvals, aliases and history."""

from __future__ import annotations

import getpass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markdown import Markdown
from rich.table import Table

from pairflow.config import load_config
from pairflow.registry.client import Registry
from pairflow.registry.decisions import version_decisions
from pairflow.registry.governance import approval_of, approve, champion_drift, promote, rollback
from pairflow.registry.history import read_history
from pairflow.registry.names import TAG_COMPLETE, TAG_GATE, TAG_KFP_RUN_ID, TAG_VARIANT
from pairflow.tracking import resolve_mlflow_settings

console = Console()

ConfigOpt = Annotated[Path | None, typer.Option("--config", "-c", help="YAML config file.")]
SetOpt = Annotated[list[str] | None, typer.Option("--set", help="Override: key.path=value.")]
UriOpt = Annotated[
    str | None,
    typer.Option("--tracking-uri", help="MLflow tracking URI (default: config, then env)."),
]
ByOpt = Annotated[str, typer.Option("--by", help="Who does this (recorded in the history).")]

registry_app = typer.Typer(
    help="Model registry: versions, cards, approvals, aliases, history.", no_args_is_help=True
)


def config_for(config: Path | None, sets: list[str] | None, uri: str | None) -> Any:

    cfg = load_config(config, sets or [])
    if uri:
        cfg.mlflow.tracking_uri = uri
    return resolve_mlflow_settings(cfg)


def _registry(cfg: Any) -> Any:

    return Registry.from_config(cfg.mlflow)


def _user(by: str) -> str:
    return by or f"cli:{getpass.getuser()}"


@registry_app.command("list")
def list_cmd(
    name: Annotated[str | None, typer.Argument(help="Model name (default: all models).")] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Registered models, or the versions of NAME with aliases, gate and approval."""

    reg = _registry(config_for(config, set_, tracking_uri))
    if name is None:
        models = reg.call("list models", lambda: reg.client.search_registered_models())
        table = Table(title="registered models")
        for col in ("name", "aliases", "description"):
            table.add_column(col)
        for m in models:
            aliases = ", ".join(f"@{a}→{v}" for a, v in sorted((m.aliases or {}).items()))
            table.add_row(m.name, aliases or "—", (m.description or "")[:60])
        console.print(table)
        return
    model = reg.registered_model(name)
    by_version: dict[str, list[str]] = {}
    for alias, version in (model.aliases or {}).items():
        by_version.setdefault(str(version), []).append(alias)
    table = Table(title=f"{name} versions")
    for col in ("version", "aliases", "gate", "approval", "variant", "KFP run", "complete"):
        table.add_column(col)
    for mv in reg.versions(name):
        tags = mv.tags or {}
        approval = approval_of(mv)
        table.add_row(
            str(mv.version),
            ", ".join(sorted(by_version.get(str(mv.version), []))) or "—",
            tags.get(TAG_GATE, "?"),
            approval.by if approval else "—",
            tags.get(TAG_VARIANT, "?"),
            tags.get(TAG_KFP_RUN_ID, "?"),
            tags.get(TAG_COMPLETE, "?"),
        )
    console.print(table)


@registry_app.command("show")
def show_cmd(
    ref: Annotated[str, typer.Argument(help="NAME, NAME@ALIAS or NAME/VERSION.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Print a version's model card, aliases and tags."""
    reg = _registry(config_for(config, set_, tracking_uri))
    mv = reg.resolve(ref)
    full = reg.model_version(mv.name, mv.version)
    console.print(f"[bold]models:/{full.name}/{full.version}[/] aliases: {full.aliases or '—'}")
    console.print(Markdown(full.description or "_no model card_"))
    table = Table(title="tags")
    table.add_column("tag")
    table.add_column("value")
    for key, val in sorted((full.tags or {}).items()):
        table.add_row(key, str(val)[:200])
    console.print(table)

    console.print(Markdown(version_decisions(reg.client, full.name, str(full.version))))


@registry_app.command("approve")
def approve_cmd(
    name: Annotated[str, typer.Argument()],
    version: Annotated[str, typer.Argument()],
    by: Annotated[str, typer.Option("--by", help="Reviewer name.")],
    comment: Annotated[str, typer.Option("--comment", help="Review comment.")] = "",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Record a reviewer's approval of NAME/VERSION (needed to promote under policy manual)."""

    reg = _registry(config_for(config, set_, tracking_uri))
    approval = approve(reg, name, version, by=by, comment=comment)
    console.print(f"models:/{name}/{version} approved by {approval.by} at {approval.at}")


@registry_app.command("promote")
def promote_cmd(
    name: Annotated[str, typer.Argument()],
    version: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the history).")],
    by: ByOpt = "",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    tracking_uri: UriOpt = None,
) -> None:
    """champion ← VERSION, previous ← old champion (gate passed; manual policy: approval)."""

    cfg = config_for(config, set_, tracking_uri)
    change = promote(
        _registry(cfg),
        name,
        version,
        reason=reason,
        actor=_user(by),
        policy=cfg.register_.policy,
        kind="manual promote",
    )
    console.print(
        f"{name}: champion {change.champion_from or '—'} → {change.champion_to}; "
        f"previous: {change.previous or '—'}"
    )


@registry_app.command("rollback")
def rollback_cmd(
    name: Annotated[str, typer.Argument()],
    reason: Annotated[str, typer.Option("--reason", help="Why (recorded in the history).")],
    by: ByOpt = "",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    tracking_uri: UriOpt = None,
) -> None:
    """champion ← previous (the previous alias is then cleared)."""

    reg = _registry(config_for(config, set_, tracking_uri))
    change = rollback(reg, name, reason=reason, actor=_user(by), kind="manual rollback")
    console.print(f"{name}: champion {change.champion_from or '—'} → {change.champion_to}")


@registry_app.command("history")
def history_cmd(
    name: Annotated[str, typer.Argument()],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    tracking_uri: UriOpt = None,
) -> None:
    """Every alias change of NAME: when, who, alias, from → to, why."""

    reg = _registry(config_for(config, set_, tracking_uri))
    events = read_history(reg, name)
    table = Table(title=f"{name} promotion history")
    for col in ("when (UTC)", "who", "kind", "alias", "from", "to", "why"):
        table.add_column(col)
    for ev in events:
        table.add_row(ev.at, ev.actor, ev.kind, ev.alias, ev.from_ or "—", ev.to or "—", ev.reason)
    console.print(table)
    if not events:
        console.print(f"{name}: no alias changes recorded")
    warning = champion_drift(reg, name, events)
    if warning:
        console.print(f"[bold red]warning:[/] {warning}")


def register(app: typer.Typer) -> None:
    """Add the ``registry`` group to ``app``."""
    app.add_typer(registry_app, name="registry")
