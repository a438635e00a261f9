"""The gRPC output's configuration: one ``[[outputs.grpc]]`` table.

A module of its own, not the top of outputs/grpc.py: the agent's configuration imports every
component's config struct in the supervisor, and outputs/grpc.py imports grpc and protobuf,
which must stay out of the supervisor (no gRPC state may exist before a fork) and out of agents
that do not use them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Annotated, Literal

from msgspec import Meta

from common.config import PositiveFloat, TlsClientOptions, address_problems


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
    state_dir: str = ""
    """Where this output sets aside batches it can never deliver (its dead-letter file); empty:
    the agent's state_dir."""

    def problems(self, *, environ: Mapping[str, str] | None = None) -> list[str]:
        out = address_problems(self.address, key="address") + super().problems(environ=environ)
        out += header_problems(self.headers)
        if self.insecure and self.tls_files_given():
            out.append("insecure: insecure (plaintext) and TLS options were both given")
        if self.insecure and self.token_given(environ):
            out.append("insecure: a token is only ever sent over TLS: drop --insecure")
        return out


_KEY = re.compile(r"[0-9a-z_.-]+")


def header_problems(headers: Mapping[str, str]) -> list[str]:
    """gRPC fails every call with INTERNAL "Invalid metadata" (which drops the batch) on a key
    outside [0-9a-z_.-] (keys are sent lower-cased) or a value outside printable ASCII, and
    raises on a ``-bin`` key given text: refuse them here."""
    out = []
    for key, value in headers.items():
        k = key.lower()
        if not _KEY.fullmatch(k):
            out.append(f"headers: {key!r} is not a gRPC metadata key (letters, digits, - _ .)")
        elif k.endswith("-bin"):
            out.append(f"headers: {key!r}: binary (-bin) metadata cannot be given as text")
        elif not all(" " <= c <= "~" for c in value):
            out.append(f"headers.{key}: the value must be printable ASCII")
    return out
