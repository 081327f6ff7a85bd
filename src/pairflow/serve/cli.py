"""``pairflow serve``: the KServe predictor as a local model server process."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pairflow.config import load_config


def register(app: typer.Typer) -> None:
    """Add ``pairflow serve`` to ``app``."""

    @app.command("serve")
    def serve(
        model: Annotated[
            str,
            typer.Option("--model", help="Model URI: a directory, models:/NAME@ALIAS or /VERSION."),
        ],
        port: Annotated[int, typer.Option("--port", min=0, max=65535, help="HTTP port.")] = 8080,
        host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
        variant: Annotated[
            str,
            typer.Option(
                "--variant",
                help="auto (variants.json: its chosen one), torch, or a compress variant name.",
            ),
        ] = "auto",
        version_label: Annotated[
            str | None,
            typer.Option(
                "--version-label",
                help="model_version label on metrics; default: MLflow version or local-<digest>.",
            ),
        ] = None,
        model_name: Annotated[
            str | None, typer.Option("--name", help="Served model name (default serve.model_name).")
        ] = None,
        tracking_uri: Annotated[
            str | None, typer.Option("--tracking-uri", help="MLflow tracking URI for models:/.")
        ] = None,
        grpc_port: Annotated[
            int | None, typer.Option("--grpc-port", help="Also serve gRPC V2 on this port.")
        ] = None,
        config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config.")] = None,
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override key=value.")] = None,
    ) -> None:
        """Serve a model over KServe V1/V2 on HOST:PORT until SIGTERM (ready after warm-up)."""
        # lazy: numpy and the server modules; `pairflow --help` should not load them
        from pairflow.serve.server import run

        full = load_config(config, set_ or [])
        cfg = full.serve
        if model_name:
            cfg = cfg.model_copy(update={"model_name": model_name})
        typer.echo(
            f"serving {model} as {cfg.model_name!r} on http://{host}:{port} "
            f"(ready: /v2/models/{cfg.model_name}/ready)",
            err=True,
        )
        run(
            cfg,
            model,
            port=port,
            host=host,
            variant=variant,
            version_label=version_label,
            tracking_uri=tracking_uri,
            grpc_port=grpc_port,
            monitor=full.monitor,
        )
