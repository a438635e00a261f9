"""The ``server`` command: its flags, the configuration they override, and the run.
agent/cli.py adds ``command`` to ``log-shuttle`` as its ``server`` command (``log-shuttle server
...``); exit 2 for a configuration error, else serve()'s code (0, or 3 when it cannot start)."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Optional

import typer

from common.errors import ConfigError
from common.exitcodes import ExitCode


class Level(str, enum.Enum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def command(
    config: Optional[Path] = typer.Option(
        None, "--config", "-c", envvar="LOG_SHUTTLE_CONFIG", dir_okay=False,
        help="TOML configuration file (its \\[server] table)."),
    grpc_listen: Optional[list[str]] = typer.Option(
        None, "--grpc-listen", metavar="ADDR", help="OTLP/gRPC (and health) on HOST:PORT."),
    tcp_listen: Optional[list[str]] = typer.Option(
        None, "--tcp-listen", metavar="ADDR",
        help="TCP on HOST:PORT: NDJSON or syslog (octet-counted or newline)."),
    output_dir: Optional[str] = typer.Option(
        None, "--output-dir", metavar="DIR", help="Write size-rotated NDJSON files here."),
    output_stdout: bool = typer.Option(False, "--output-stdout", help="Write NDJSON on stdout."),
    insecure: bool = typer.Option(False, "--insecure", help="Plaintext listeners."),
    tls_cert: Optional[str] = typer.Option(None, "--tls-cert", metavar="FILE"),
    tls_key: Optional[str] = typer.Option(None, "--tls-key", metavar="FILE"),
    tls_ca: Optional[str] = typer.Option(
        None, "--tls-ca", metavar="FILE", help="Require client certificates signed by these CAs."),
    auth_token_file: Optional[str] = typer.Option(
        None, "--auth-token-file", metavar="FILE",
        help="Bearer token clients must present (or LOG_SHUTTLE_AUTH_TOKEN)."),
    log_level: Optional[Level] = typer.Option(None, "--log-level"),
    from_jetstream: Optional[list[str]] = typer.Option(
        None, "--from-jetstream", metavar="URL",
        help="Consume a NATS JetStream stream (nats://HOST:PORT; repeat for the cluster's "
             "servers) with a durable pull consumer."),
    jetstream_stream: Optional[str] = typer.Option(None, "--jetstream-stream", metavar="NAME"),
    jetstream_consumer: Optional[str] = typer.Option(
        None, "--jetstream-consumer", metavar="NAME",
        help="Durable consumer name; servers with the same one share the messages."),
) -> None:
    """Receive logs (OTLP/gRPC, TCP NDJSON or syslog) and write them as NDJSON."""
    from server.config import load_server_config

    values = {"grpc_listen": grpc_listen, "tcp_listen": tcp_listen, "output_dir": output_dir,
              "output_stdout": output_stdout or None, "insecure": insecure or None,
              "tls_cert": tls_cert, "tls_key": tls_key, "tls_ca": tls_ca,
              "auth_token_file": auth_token_file,
              "log_level": log_level.value if log_level else None,
              "from_jetstream": from_jetstream, "jetstream_stream": jetstream_stream,
              "jetstream_consumer": jetstream_consumer}
    overrides = [(["server", k], v) for k, v in values.items() if v]
    try:
        cfg = load_server_config(str(config) if config else None, overrides=overrides)
    except ConfigError as exc:
        typer.echo(f"log-shuttle: {exc}", err=True)
        raise typer.Exit(ExitCode.CONFIG) from None
    from server.main import serve

    raise typer.Exit(serve(cfg))
