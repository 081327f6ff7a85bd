"""``pairflow monitor-sink``: the request-log sink as a service
(:mod:`pairflow.serve.requestlog.sink`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from pairflow.config import load_config
from pairflow.errors import ConfigError


def register(app: typer.Typer) -> None:
    """Add ``pairflow monitor-sink`` to ``app``."""

    @app.command("monitor-sink")
    def monitor_sink(
        port: Annotated[int, typer.Option("--port", min=0, max=65535, help="HTTP port.")] = 8090,
        host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
        pair_ttl_s: Annotated[
            float,
            typer.Option("--pair-ttl", min=0.1, help="Seconds a request waits for its response."),
        ] = 60.0,
        retry_s: Annotated[
            float,
            typer.Option("--retry", min=0.05, help="Seconds between writes while storage is down."),
        ] = 2.0,
        config: Annotated[Path | None, typer.Option("--config", "-c", help="YAML config.")] = None,
        set_: Annotated[list[str] | None, typer.Option("--set", help="Override key=value.")] = None,
    ) -> None:
        """Receive KServe payload-logger CloudEvents; write Parquet under monitor.log_prefix."""

        # lazy: boto3, botocore, kserve, pyarrow, starlette (slow to import); only this path needs
        # it
        from pairflow.serve.requestlog.sink import serve_sink

        cfg = load_config(config, set_ or [])
        if not cfg.monitor.log_prefix:
            raise ConfigError(
                "monitor.log_prefix: empty; set it to an s3:// prefix or a folder "
                "(--set monitor.log_prefix=...)"
            )
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s"
        )
        typer.echo(
            f"monitor-sink on http://{host}:{port} writing to {cfg.monitor.log_prefix}", err=True
        )
        serve_sink(
            cfg.monitor, cfg.data.s3, host=host, port=port, pair_ttl_s=pair_ttl_s, retry_s=retry_s
        )
