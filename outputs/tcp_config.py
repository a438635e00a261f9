"""The ``[[outputs.tcp]]`` table (outputs/tcp.py is the sink). Its own module so that the
supervisor, which decodes every table, does not import the sink's code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Literal

from msgspec import Meta

from common.config import PositiveFloat, TlsClientOptions, address_problems
from common.syslog import FACILITIES


class TcpOutputConfig(TlsClientOptions, kw_only=True):
    """One ``[[outputs.tcp]]`` table."""

    address: str
    """HOST:PORT of the receiver."""
    name: str = "tcp"
    framing: Literal["ndjson", "syslog-octet", "syslog-newline", "relp", "ndjson-acked"] = \
        "ndjson"
    """``relp``: RFC 5424 messages over RELP (rsyslog's imrelp), each confirmed by the
    receiver; ``ndjson-acked``: NDJSON batches that log-shuttle server acknowledges once
    written (outputs/acked.py). Either way nothing is lost to a receiver that hangs up or
    restarts."""
    tls: bool | None = None
    """TLS on or off; unset: on when any tls_* option is given."""
    facility: str = "user"
    """syslog facility (kern, user, daemon, local0 ... local7)."""
    app_name: str = ""
    """syslog APP-NAME; empty: the log file's name without extension."""
    connect_timeout: PositiveFloat = 5.0
    write_timeout: PositiveFloat = 10.0
    """Also how long RELP waits for the receiver's answers."""
    replay_bytes: Annotated[int, Meta(ge=0)] = 8 * 1024 * 1024
    """Best-effort framings: what the sink keeps of what it wrote on a connection, written
    again after the receiver resets it (0: nothing; a broken connection then loses what was in
    flight)."""
    state_dir: str = ""
    """Where this output sets aside batches it can never deliver (its dead-letter file); empty:
    the agent's state_dir."""

    def use_tls(self) -> bool:
        return self.tls if self.tls is not None else self.tls_files_given()

    def problems(self, *, environ: Mapping[str, str] | None = None) -> list[str]:
        out = address_problems(self.address, key="address") + super().problems(environ=environ)
        if self.facility not in FACILITIES:
            out.append(f"facility: unknown syslog facility {self.facility!r} (one of "
                       f"{', '.join(FACILITIES)})")
        if self.framing == "relp" and self.auth_token_file:
            out.append("auth_token_file: RELP has no token (rsyslog's imrelp authenticates "
                       "clients by TLS certificate: tls_cert, tls_key)")
        elif not self.use_tls() and self.token_given(environ):
            out.append(f"{'auth_token_file' if self.auth_token_file else 'tls'}: a token is only "
                       f"ever sent over TLS: set tls = true (--tls-ca ...) or give no token")
        return out
