"""The ``[[outputs.jetstream]]`` table (outputs/jetstream.py is the sink). Its own module so that
the supervisor, which decodes every table, does not import asyncio and the sink's code."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

from msgspec import Meta

from common.config import PositiveFloat, TlsClientOptions, file_problems


class JetStreamOutputConfig(TlsClientOptions, kw_only=True):
    """One ``[[outputs.jetstream]]`` table."""

    servers: list[str]
    """nats://HOST:PORT (or tls://...) of one or more servers of the cluster."""
    name: str = "jetstream"
    stream: str = "LOGS"
    subject: str = "logs.{host}.{kind}"
    """Subject template: ``{host}`` (the agent's host, dots made underscores) and ``{kind}``
    (log, process, conn, http, span, loss, etw)."""
    create_stream: bool = False
    """Create the stream when it does not exist (else: stop with a message saying so)."""
    stream_subjects: list[str] = []
    """Subjects of a stream it creates; default: the template with ``*`` for each field."""
    replicas: Annotated[int, Meta(ge=1, le=5)] = 1
    duplicate_window: PositiveFloat = 120.0
    """Seconds the stream remembers message ids: must exceed the agent's worst replay (see
    docs/jetstream.md)."""
    retention: Literal["limits", "interest", "workqueue"] = "limits"
    max_bytes: int = -1
    """Stream limit for a stream it creates (-1: none). Reached, the stream refuses (discard
    new) and the agent holds."""
    max_msgs: int = -1
    max_in_flight: Annotated[int, Meta(ge=1)] = 4096
    """Publishes awaiting their ack at once."""
    ack_timeout: PositiveFloat = 5.0
    """Seconds to wait for the acks of a batch before retrying what is not acknowledged."""
    connect_timeout: PositiveFloat = 5.0
    tls: bool | None = None
    """TLS on or off; unset: on when any tls_* option is given or a server is tls://."""
    user: str = ""
    password_file: str = ""
    creds_file: str = ""
    """A NATS credentials file (user JWT and NKey seed: decentralized auth)."""

    def use_tls(self) -> bool:
        return self.tls if self.tls is not None else (
            self.tls_files_given() or any(s.startswith("tls://") for s in self.servers))

    def problems(self, *, environ: Mapping[str, str] | None = None) -> list[str]:
        out = super().problems(environ=environ)
        if not self.servers:
            out.append("servers: give at least one server (nats://HOST:PORT)")
        for s in self.servers:
            if not re.fullmatch(r"(nats|tls)://[^\s/]+:\d+", s):
                out.append(f"servers: {s!r} is not nats://HOST:PORT or tls://HOST:PORT")
        try:
            self.subject.format(host="h", kind="k")
        except (KeyError, IndexError, ValueError) as exc:
            out.append(f"subject: {self.subject!r}: only {{host}} and {{kind}} may be used "
                       f"({exc})")
        for key in ("password_file", "creds_file"):
            out += file_problems(getattr(self, key), key=key)
        if self.password_file and not self.user:
            out.append("password_file: needs user")
        if sum(map(bool, (self.auth_token_file, self.user, self.creds_file))) > 1:
            out.append("auth_token_file: give one of a token, a user or a credentials file")
        return out
