"""What every component's configuration is made of: the base of a table (unknown keys are
errors), constrained numbers, the TLS client options of the network outputs, and checks of
addresses and paths that return problems instead of raising.

A component's config struct derives from :class:`Section` and may define ``problems()``: every
problem no single key's type shows, each as ``"key: message"`` with the key relative to the
component's table. The agent's loader (agent/config.py) prefixes them (``outputs.tcp[0].``), so
that ``log-shuttle check-config`` refuses what the agent would refuse.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Annotated

from msgspec import Meta, Struct

KiB = 1024
MiB = 1024 * KiB

TOKEN_ENV = "LOG_SHUTTLE_AUTH_TOKEN"
"""The bearer token can come from this variable instead of a file (never from argv)."""

PositiveInt = Annotated[int, Meta(gt=0)]
PositiveFloat = Annotated[float, Meta(gt=0)]


class Section(Struct, forbid_unknown_fields=True, kw_only=True):
    """Base of every configuration table: unknown keys are errors."""

    def problems(self, *, environ: Mapping[str, str] | None = None) -> list[str]:
        """Problems no single key's type shows, each ``"key: message"`` (relative keys).
        ``environ`` is the environment the component will run with (default: this one's)."""
        return []

    def message_bytes(self) -> int:
        """An input's: the largest message it puts on its queue, when that can be large (the
        queues are checked against it); 0: small."""
        return 0


class TlsClientOptions(Section):
    """What a network output is given to reach its receiver over TLS."""

    tls_ca: str = ""
    """CA certificates (PEM) to verify the receiver with; empty: the system's."""
    tls_cert: str = ""
    """This agent's certificate (PEM), for receivers that require one (mutual TLS)."""
    tls_key: str = ""
    tls_server_name: str = ""
    """The name the receiver's certificate must carry; empty: the host of ``address``."""
    auth_token_file: str = ""
    """A file holding a bearer token (or set LOG_SHUTTLE_AUTH_TOKEN); sent only over TLS."""
    backoff_max: PositiveFloat = 30.0
    """Retries of a failed batch back off exponentially (with jitter) up to this many seconds."""

    def tls_files_given(self) -> bool:
        return bool(self.tls_ca or self.tls_cert or self.tls_key or self.tls_server_name)

    def token_given(self, environ: Mapping[str, str] | None = None) -> bool:
        """A bearer token will be sent: a token file, or LOG_SHUTTLE_AUTH_TOKEN."""
        env = os.environ if environ is None else environ
        return bool(self.auth_token_file or env.get(TOKEN_ENV, "").strip())

    def problems(self, *, environ: Mapping[str, str] | None = None) -> list[str]:
        out = []
        if bool(self.tls_cert) != bool(self.tls_key):
            out.append(f"{'tls_key' if self.tls_cert else 'tls_cert'}: give both a TLS "
                       f"certificate and its key (tls_cert and tls_key)")
        return out


def address_problems(text: str, *, key: str, listen: bool = False,
                     default_host: bool = False) -> list[str]:
    """What is wrong with ``HOST:PORT`` (or ``[V6]:PORT``; ``:PORT`` when ``default_host``);
    port 0 (any free port) only for a ``listen`` address. The same rules as
    ``common.net.parse_address``, as problems."""
    if not text:
        return [f"{key}: empty: give HOST:PORT"]
    host, sep, port = text.rpartition(":")
    if not sep:
        return [f"{key}: address {text!r} is not HOST:PORT (no port)"]
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host and not default_host:
        return [f"{key}: address {text!r} has no host (HOST:PORT)"]
    if not port:
        return [f"{key}: address {text!r} has no port (HOST:PORT)"]
    low = 0 if listen else 1
    if not port.isdigit() or not low <= int(port) < 65536:
        return [f"{key}: address {text!r}: the port must be a number in {low}-65535"]
    if any(c.isspace() for c in host) or ("[" in host or "]" in host):
        return [f"{key}: address {text!r}: {host!r} is not a host name or address"]
    return []


def file_problems(path: str, *, key: str) -> list[str]:
    """A file that must exist and be readable (nothing to say when ``path`` is empty)."""
    if not path:
        return []
    if not os.path.exists(path):
        return [f"{key}: {path} does not exist"]
    if os.path.isdir(path):
        return [f"{key}: {path} is a directory, not a file"]
    if not os.access(path, os.R_OK):
        return [f"{key}: {path} cannot be read (permission denied)"]
    return []


def directory_problems(path: str, *, key: str) -> list[str]:
    """A directory that is used or made: it must not be a file, nor lie under one."""
    if not path:
        return []
    probe = os.path.abspath(path)
    if os.path.exists(probe) and not os.path.isdir(probe):
        return [f"{key}: {path} is a file, not a directory"]
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            return []
        probe = parent
    if not os.path.isdir(probe):
        return [f"{key}: {path} cannot be made: {probe} is a file, not a directory"]
    return []
