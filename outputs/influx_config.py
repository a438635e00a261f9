"""The ``[[outputs.influxdb]]`` table (outputs/influx.py is the sink). Its own module so that the
supervisor, which decodes every table, does not import the sink's HTTP and TLS code."""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Literal

from msgspec import Meta

from common.config import PositiveFloat, Section, address_problems, file_problems


class InfluxOutputConfig(Section):
    """``[[outputs.influxdb]]``."""

    name: str = "influxdb"
    protocol: Literal["http", "http-v2", "udp", "tcp"] = "http"
    """http: ``/write`` (1.x); http-v2: ``/api/v2/write``; udp / tcp: line protocol on a socket."""
    url: str = "http://127.0.0.1:8086"
    """http / http-v2: the server's base URL (https:// for TLS)."""
    address: str = ""
    """udp / tcp: HOST:PORT."""
    database: str = "log_shuttle"
    """http (1.x): the database."""
    retention_policy: str = ""
    org: str = ""
    """http-v2: the organisation and bucket."""
    bucket: str = "log_shuttle"
    username: str = ""
    """http (1.x) with authentication: the user; its password from ``password_file``."""
    password_file: str = ""
    token_file: str = ""
    """http-v2 (and 1.8+ http): a file with the API token (``Authorization: Token ...``)."""
    tls_ca: str = ""
    """https: CA certificates to verify the server with; empty: the system's."""
    timeout: PositiveFloat = 10.0
    max_lines: Annotated[int, Meta(ge=1)] = 5000
    """Points per HTTP request at most (a batch is split)."""
    max_datagram: Annotated[int, Meta(ge=256, le=65507)] = 1400
    """udp: bytes per datagram at most."""
    backoff_max: PositiveFloat = 30.0

    def problems(self, **_: object) -> list[str]:
        out = []
        if self.protocol in ("udp", "tcp"):
            out += address_problems(self.address, key="address")
        else:
            url = urllib.parse.urlsplit(self.url)
            if url.scheme not in ("http", "https") or not url.hostname:
                out.append(f"url: {self.url!r} is not http(s)://HOST[:PORT]")
            if self.address:
                out.append(f"address: only for protocol udp or tcp (this is {self.protocol})")
        for key in ("password_file", "token_file", "tls_ca"):
            out += file_problems(getattr(self, key), key=key)
        if self.password_file and not self.username:
            out.append("password_file: give the username too")
        return out
