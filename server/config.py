"""The server's configuration: the ``[server]`` table of the TOML file (the agent's file may hold
it beside its own tables, which the server leaves to the agent), then LOG_SHUTTLE_SERVER__*
variables, then the flags of ``log-shuttle server`` (common.configload does the layering and
the checks; every problem is reported at once, each with its key)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from common.config import KiB, MiB, PositiveFloat, Section
from common.errors import ConfigError

TABLE = "server"


class ServerConfig(Section):
    """``log-shuttle server``: the receiving end."""

    grpc_listen: list[str] = []
    """Addresses (HOST:PORT) for OTLP/gRPC and the gRPC health service."""
    tcp_listen: list[str] = []
    """Addresses for TCP: NDJSON, or syslog octet-counted or newline-framed (told per frame)."""
    output_dir: str = "/var/lib/log-shuttle/received"
    """Where the size-rotated NDJSON files go."""
    output_stdout: bool = False
    """NDJSON on stdout instead of files."""
    insecure: bool = False
    """Plaintext listeners (without it, tls_cert and tls_key are required)."""
    tls_cert: str = ""
    tls_key: str = ""
    tls_ca: str = ""
    """With it, clients must present a certificate signed by these CAs (mutual TLS)."""
    auth_token_file: str = ""
    """A file with the bearer token clients must present (or LOG_SHUTTLE_AUTH_TOKEN)."""
    max_message_bytes: Annotated[int, Meta(ge=1024)] = 4 * MiB
    """Largest gRPC message or TCP frame accepted."""
    max_connections: Annotated[int, Meta(ge=1)] = 1024
    """TCP connections at once, per listener (more are closed at once, counted); and gRPC calls
    at once (more are refused RESOURCE_EXHAUSTED with RetryInfo, counted)."""
    idle_timeout: PositiveFloat = 300.0
    """A connection silent this long is closed."""
    file_bytes: Annotated[int, Meta(ge=4 * KiB)] = 100 * MiB
    """A file is rotated once it is this large."""
    max_files: Annotated[int, Meta(ge=1)] = 10
    """Rotated files kept (the oldest are deleted)."""
    drain_timeout: Annotated[float, Meta(ge=0)] = 5.0
    """SIGTERM: how long in-flight calls and connections may take to finish."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    exactly_once: bool = True
    """Drop what the output files already hold, per record source (log-shuttle's record ids:
    server/dedup.py), so that replays never duplicate a line. Files only (not stdout)."""
    from_jetstream: list[str] = []
    """nats://HOST:PORT of a JetStream cluster to consume with a durable pull consumer."""
    jetstream_stream: str = "LOGS"
    jetstream_consumer: str = "log-shuttle-server"
    """The durable consumer's name: servers given the same one share the stream's messages."""
    jetstream_filter: str = ""
    """Only these subjects of the stream (e.g. ``logs.web-*.log``); empty: all."""
    jetstream_batch: Annotated[int, Meta(ge=1, le=10_000)] = 500
    """Messages fetched, written, made durable and acknowledged at a time."""
    jetstream_ack_wait: PositiveFloat = 30.0
    """Seconds before a message delivered and not acknowledged is delivered again (set when the
    durable consumer is made)."""
    jetstream_creds_file: str = ""
    jetstream_tls_ca: str = ""


def load_server_config(
    path: str | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    overrides: list[tuple[list[str], Any]] = (),
) -> ServerConfig:
    """The ``[server]`` table of the file at ``path``, then the LOG_SHUTTLE_SERVER__* variables,
    then ``overrides`` (key paths from the flags, such as ``["server", "tcp_listen"]``).

    Raises ConfigError listing every problem found, each naming its key (or variable)."""
    from common.configload import apply_layers, check, env_overrides, read_toml, with_origin

    data: dict[str, Any] = read_toml(path) if path else {}
    layers = [layer for layer in env_overrides(os.environ if environ is None else environ)
              if layer[1][:1] == [TABLE]]
    layers += [("command line", parts, value) for parts, value in overrides]
    problems, origin = apply_layers(data, layers)
    table = data.get(TABLE, {})
    problems += with_origin(check(table, ServerConfig, TABLE), origin)
    if not problems:
        config = msgspec.convert(table, ServerConfig)
        problems += check_server(config)
        if not problems:
            return config
    raise ConfigError(problems, source=path)


def check_server(s: ServerConfig) -> list[str]:
    """Problems of the server's table that no single key shows."""
    problems = []
    if not s.grpc_listen and not s.tcp_listen and not s.from_jetstream:
        problems.append("server: nothing to listen on: give --grpc-listen or --tcp-listen")
    listens = bool(s.grpc_listen or s.tcp_listen) or not s.from_jetstream
    if listens and not s.insecure and not (s.tls_cert and s.tls_key):
        problems.append("server: give tls_cert and tls_key (--tls-cert, --tls-key), or insecure "
                        "= true (--insecure) for plaintext")
    if s.insecure and (s.tls_cert or s.tls_key or s.tls_ca):
        problems.append("server: insecure (plaintext) and TLS options were both given")
    for url in s.from_jetstream:
        if not url.startswith(("nats://", "tls://")) or url.rpartition(":")[2] == "" \
                or not url.rpartition(":")[2].isdigit():
            problems.append(f"server.from_jetstream: {url!r} is not nats://HOST:PORT")
    if s.from_jetstream and s.output_stdout:
        problems.append("server.from_jetstream: a message is acknowledged once its write is "
                        "durable: give an output directory, not --output-stdout")
    return problems
