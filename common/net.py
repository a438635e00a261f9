"""Small helpers the network outputs and the server share: addresses and the auth token."""

from __future__ import annotations

import os
from collections.abc import Mapping

from common.component import BootError
from common.config import TOKEN_ENV


def parse_address(text: str, *, who: str, default_host: str | None = None,
                  listen: bool = False) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT`` (or ``:PORT`` when ``default_host`` is given); port 0
    (any free port) only for a ``listen`` address."""
    host, sep, port = text.rpartition(":")
    if not sep:
        raise BootError(f"{who}: address {text!r} is not HOST:PORT")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host:
        if default_host is None:
            raise BootError(f"{who}: address {text!r} has no host (HOST:PORT)")
        host = default_host
    if not port.isdigit() or not (0 if listen else 1) <= int(port) < 65536:
        raise BootError(f"{who}: address {text!r}: the port must be a number in 1-65535")
    if any(c.isspace() for c in host) or ("[" in host or "]" in host):
        raise BootError(f"{who}: address {text!r}: {host!r} is not a host name or address")
    return host, int(port)


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def read_token(path: str, *, who: str, environ: Mapping[str, str] | None = None) -> str:
    """The bearer token: from ``path`` when given (whitespace around it dropped), else from
    LOG_SHUTTLE_AUTH_TOKEN, else "" (none)."""
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as exc:
            raise BootError(f"{who}: cannot read the token file {path}: "
                            f"{exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            raise BootError(f"{who}: the token file {path} is not UTF-8 text") from exc
        if not token:
            raise BootError(f"{who}: the token file {path} is empty")
    else:
        token = (os.environ if environ is None else environ).get(TOKEN_ENV, "").strip()
    if any(c.isspace() or not c.isprintable() for c in token):
        raise BootError(f"{who}: the token holds spaces or control characters")
    return token
