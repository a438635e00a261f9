"""The gRPC output's configuration: one ``[[outputs.grpc]]`` table.

A module of its own, not the top of outputs/grpc.py: the agent's configuration imports every
component's config struct in the supervisor, and outputs/grpc.py imports grpc and protobuf,
which must stay out of the supervisor (no gRPC state may exist before a fork) and out of agents
that do not use them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from msgspec import Meta

from common.config import PositiveFloat, TlsClientOptions


class GrpcOutputConfig(TlsClientOptions, kw_only=True):
    address: str
    """HOST:PORT of an OTLP/gRPC receiver."""
    name: str = "grpc"
    insecure: bool = False
    """Plaintext (no TLS)."""
    headers: dict[str, str] = {}
    """Extra request metadata."""
    compression: Literal["gzip", "none"] = "gzip"
    timeout: PositiveFloat = 10.0
    """Deadline of each Export call, in seconds."""
    concurrency: Annotated[int, Meta(ge=1, le=64)] = 4
    """Export calls in flight at once (a batch is split into several)."""
    max_records: Annotated[int, Meta(ge=1)] = 500
    """Log records per Export call."""
    service_name: str = ""
    """service.name of the resource; empty: none."""

    def problems(self, *, environ: Mapping[str, str] | None = None) -> list[str]:
        out = super().problems(environ=environ)
        if self.insecure and self.tls_files_given():
            out.append("insecure: insecure (plaintext) and TLS options were both given")
        if self.insecure and self.token_given(environ):
            out.append("insecure: a token is only ever sent over TLS: drop --insecure")
        return out
