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
import stat
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
        missing = []
        for key in ("tls_ca", "tls_cert", "tls_key", "auth_token_file"):
            found = file_problems(getattr(self, key), key=key)
            out += found
            missing += [key] if found else []
        out += tls_problems(ca="" if "tls_ca" in missing else self.tls_ca,
                            cert="" if {"tls_cert", "tls_key"} & set(missing) else self.tls_cert,
                            key=self.tls_key)
        if "auth_token_file" not in missing:
            out += token_problems(self.auth_token_file, environ=environ)
        return out


def tls_problems(*, ca: str = "", cert: str = "", key: str = "") -> list[str]:
    """What Python's ssl module says of a CA file and a certificate with its key (files that
    exist): not PEM, or a key that does not match its certificate."""
    import ssl

    out = []
    if ca:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=ca)
        except (ssl.SSLError, ValueError, OSError) as exc:
            out.append(f"tls_ca: {ca} holds no usable PEM certificate ({_reason(exc)})")
    if cert and key:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(certfile=cert, keyfile=key)
        except (ssl.SSLError, ValueError, OSError) as exc:
            out.append(f"tls_cert: TLS certificate {cert} and key {key} cannot be used together "
                       f"({_reason(exc)})")
    return out


def token_problems(path: str, *, environ: Mapping[str, str] | None = None) -> list[str]:
    """A token file (or LOG_SHUTTLE_AUTH_TOKEN) that ``common.net.read_token`` would refuse:
    empty, not UTF-8, spaces or control characters inside."""
    from common.component import BootError
    from common.net import read_token

    try:
        read_token(path, who="auth_token_file" if path else f"auth_token_file: {TOKEN_ENV}",
                   environ=environ)
    except BootError as exc:
        return [str(exc)]
    return []


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "reason", None) or getattr(exc, "strerror", None) or exc)


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
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return [f"{key}: no such file: {path}"]
    except OSError as exc:
        return [f"{key}: {path} cannot be reached ({_reason(exc)})"]
    if stat.S_ISDIR(st.st_mode):
        return [f"{key}: {path} is a directory, not a file"]
    if not os.access(path, os.R_OK):
        return [f"{key}: {path} cannot be read (permission denied)"]
    return []


def directory_problems(path: str, *, key: str) -> list[str]:
    """A directory that is used or made: it must not be a file, nor lie under one, and it (or
    the nearest directory above it that exists) must be writable."""
    if not path:
        return []
    probe = os.path.abspath(path)
    while True:
        try:
            st = os.stat(probe)
        except (FileNotFoundError, NotADirectoryError):
            parent = os.path.dirname(probe)
            if parent == probe:
                return []
            probe = parent
            continue
        except OSError as exc:
            return [f"{key}: {path} cannot be reached ({_reason(exc)})"]
        break
    made = "" if probe == os.path.abspath(path) else f" cannot be made: {probe}"
    if not stat.S_ISDIR(st.st_mode):
        return [f"{key}: {path}{made} is a file, not a directory"]
    if not os.access(probe, os.W_OK | os.X_OK):
        return [f"{key}: {path}{made} cannot be written (permission denied)"]
    return []
