"""TLS for the network outputs and the server: contexts and gRPC credentials from file options.

Every file is read and checked when a component builds, through Python's ssl module, so that a
missing file, a file that is not PEM, or a key that does not match its certificate stops the
agent at once with one clear message (a BootError, exit 3) rather than failing each connection
later. Verification of the peer is on unless the caller asks for plaintext.

The ssl module (and with it OpenSSL's libssl and libcrypto, about 4 MiB of RSS) is loaded only by
a component that makes a context. Code that handles connections of either kind asks
:func:`ssl_error`, :func:`want_io` and :func:`is_tls_socket` instead of naming ``ssl``'s classes,
so that an output without TLS never loads it: while nothing has imported ssl, no TLS socket
exists and no TLS error can be raised.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from common.component import BootError

if TYPE_CHECKING:
    import ssl


class _NoTls(Exception):
    """Stands for ssl's exceptions while ssl is not loaded; never raised."""


def ssl_error() -> type[BaseException]:
    """``ssl.SSLError`` once ssl is loaded, else an exception nothing raises (for an ``except``
    clause: it is evaluated when an exception is matched)."""
    mod = sys.modules.get("ssl")
    return mod.SSLError if mod is not None else _NoTls


def want_io() -> tuple[type[BaseException], ...]:
    """ssl's "try again" errors of a non-blocking TLS socket (none while ssl is not loaded)."""
    mod = sys.modules.get("ssl")
    return (mod.SSLWantReadError, mod.SSLWantWriteError) if mod is not None else ()


def is_tls_socket(sock: object) -> bool:
    mod = sys.modules.get("ssl")
    return mod is not None and isinstance(sock, mod.SSLSocket)


@dataclass(frozen=True, kw_only=True)
class TlsFiles:
    """Where a side's TLS material is. ``ca``: the CAs to trust for the peer (system CAs when
    empty, on a client); ``cert``/``key``: this side's own certificate chain and key;
    ``server_name``: the name to verify the server's certificate against (default: the host
    of the address)."""

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""

    def any(self) -> bool:
        return bool(self.ca or self.cert or self.key or self.server_name)


def _check_pair(files: TlsFiles, who: str) -> None:
    if bool(files.cert) != bool(files.key):
        raise BootError(f"{who}: give both a TLS certificate and its key (tls_cert and tls_key)")


def _load(ctx: ssl.SSLContext, files: TlsFiles, who: str) -> None:
    import ssl

    if files.ca:
        try:
            ctx.load_verify_locations(cafile=files.ca)
        except FileNotFoundError as exc:
            raise BootError(f"{who}: TLS CA file not found: {files.ca}") from exc
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise BootError(f"{who}: TLS CA file {files.ca} holds no usable PEM certificate "
                            f"({_reason(exc)})") from exc
    if files.cert:
        try:
            ctx.load_cert_chain(certfile=files.cert, keyfile=files.key)
        except FileNotFoundError as exc:
            raise BootError(f"{who}: TLS certificate or key not found: {exc.filename or files.cert}"
                            ) from exc
        except (ssl.SSLError, ValueError, OSError) as exc:
            raise BootError(f"{who}: TLS certificate {files.cert} and key {files.key} cannot be "
                            f"used together ({_reason(exc)})") from exc


def client_context(files: TlsFiles, *, who: str) -> ssl.SSLContext:
    """A client context that verifies the server (against ``files.ca``, or the system's CAs)
    and presents ``files.cert`` when given (mutual TLS)."""
    import ssl

    _check_pair(files, who)
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not files.ca:
        ctx.load_default_certs()
    _load(ctx, files, who)
    return ctx


def server_context(files: TlsFiles, *, who: str) -> ssl.SSLContext:
    """A server context presenting ``files.cert``; with ``files.ca`` it requires and verifies a
    client certificate signed by those CAs (mutual TLS)."""
    import ssl

    if not files.cert:
        raise BootError(f"{who}: TLS needs a certificate and key (tls_cert, tls_key)")
    _check_pair(files, who)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load(ctx, files, who)
    ctx.verify_mode = ssl.CERT_REQUIRED if files.ca else ssl.CERT_NONE
    return ctx


def _read(path: str, who: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise BootError(f"{who}: cannot read {path}: {exc.strerror or exc}") from exc


def grpc_channel_credentials(files: TlsFiles, *, who: str) -> Any:
    """gRPC channel credentials; the files are checked through ssl first (clear messages)."""
    import grpc

    client_context(files, who=who)
    return grpc.ssl_channel_credentials(
        root_certificates=_read(files.ca, who) if files.ca else None,
        private_key=_read(files.key, who) if files.key else None,
        certificate_chain=_read(files.cert, who) if files.cert else None)


def grpc_server_credentials(files: TlsFiles, *, who: str) -> Any:
    """gRPC server credentials; with ``files.ca``, clients must present a certificate it signed."""
    import grpc

    server_context(files, who=who)
    return grpc.ssl_server_credentials(
        [(_read(files.key, who), _read(files.cert, who))],
        root_certificates=_read(files.ca, who) if files.ca else None,
        require_client_auth=bool(files.ca))


def _reason(exc: BaseException) -> str:
    return getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)


def describe(exc: BaseException) -> str:
    """A short human reason for a TLS failure during a connection."""
    import ssl  # loaded already: ``exc`` came from it

    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS: the server's certificate was not accepted ({exc.verify_message})"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason or str(exc)
        if "ALERT" in reason.upper():
            return f"TLS: the server refused the handshake ({reason}; a client certificate it " \
                   f"does not accept?)"
        return f"TLS: {reason}"
    return str(exc)
