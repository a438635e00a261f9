"""The OTLP metrics output's configuration: one ``[[outputs.otlp_metrics]]`` table (a module of
its own, as outputs/grpc_config.py is: outputs/otlpmetrics.py imports grpc, which must stay out
of the supervisor)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from common.config import PositiveFloat, TlsClientOptions, address_problems
from outputs.grpc_config import header_problems


class OtlpMetricsOutputConfig(TlsClientOptions, kw_only=True):
    address: str
    """HOST:PORT of an OTLP/gRPC receiver (the same kind of endpoint as the logs')."""
    name: str = "otlp_metrics"
    insecure: bool = False
    """Plaintext (no TLS)."""
    headers: dict[str, str] = {}
    """Extra request metadata."""
    temporality: Literal["cumulative", "delta"] = "cumulative"
    """cumulative: totals since the output started; delta: each interval's points."""
    timeout: PositiveFloat = 10.0
    """Deadline of each Export call, in seconds."""
    expiry: PositiveFloat = 3600.0
    """Cumulative: a series not updated for this many seconds is forgotten."""

    def problems(self, *, environ: Mapping[str, str] | None = None) -> list[str]:
        out = address_problems(self.address, key="address") + super().problems(environ=environ)
        out += header_problems(self.headers)
        if self.insecure and self.tls_files_given():
            out.append("insecure: insecure (plaintext) and TLS options were both given")
        if self.insecure and self.token_given(environ):
            out.append("insecure: a token is only ever sent over TLS: drop insecure")
        return out
