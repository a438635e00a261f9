"""The TCP output: batches as NDJSON or RFC 5424 syslog (octet-counted or newline-framed), over
plain TCP or TLS, one write per batch.

Delivery is best-effort, as TCP gives it: a batch is OK once the kernel took all of it. Before
each write the sink looks whether the receiver closed the connection (a FIN or a TLS
close_notify makes the socket readable with nothing to read), so that a receiver that stopped
between two batches costs a reconnect, not a batch. Any failure (refused, reset, timeout, TLS,
a rejected token) closes the connection and returns RETRY: the runner holds the batch and tries
again with exponential backoff and jitter, its queue fills, and backpressure reaches the inputs.

With a token (``auth_token_file`` or LOG_SHUTTLE_AUTH_TOKEN; only over TLS) the sink opens each
connection with ``AUTH <token>\\n`` and waits for the server's ``OK\\n`` (log-shuttle server's
convention; syslog receivers know nothing of it, so give no token for them).
"""

from __future__ import annotations

import logging
import select
import socket
import ssl
from collections.abc import Callable

from common.component import BootError, Context
from common.events import Batch, Event
from common.net import format_address, parse_address, read_token
from common.tls import TlsFiles, client_context, describe
from outputs.base import Verdict
from outputs.failures import FailureReporter
from outputs.ndjson import Renderer
from outputs.runner import Backoff, OutputRunner
from outputs.syslog import FACILITIES, SyslogEncoder

AUTH_OK = b"OK\n"


class AuthRejected(Exception):
    """The server answered the token with something else than OK."""


def build(ctx: Context) -> OutputRunner:
    cfg = ctx.config
    if len(ctx.consumers) != 1:
        raise BootError(f"{ctx.name}: expected one input queue, got {len(ctx.consumers)}")
    host, port = parse_address(cfg.address, who=ctx.name)
    files = TlsFiles(ca=cfg.tls_ca, cert=cfg.tls_cert, key=cfg.tls_key,
                     server_name=cfg.tls_server_name)
    use_tls = cfg.tls if cfg.tls is not None else files.any()
    tls = client_context(files, who=ctx.name) if use_tls else None
    token = read_token(cfg.auth_token_file, who=ctx.name)
    if token and tls is None:
        raise BootError(f"{ctx.name}: a token is only ever sent over TLS: set tls = true "
                        f"(--tls-ca ...) or give no token")
    if cfg.facility not in FACILITIES:
        raise BootError(f"{ctx.name}: unknown syslog facility {cfg.facility!r}")
    sink = TcpSink(
        name=f"tcp {format_address(host, port)}", host=host, port=port,
        encode=encoder(framing=cfg.framing, host=ctx.host, facility=cfg.facility,
                       app_name=cfg.app_name),
        tls=tls, server_name=cfg.tls_server_name or host, token=token,
        connect_timeout=cfg.connect_timeout, write_timeout=cfg.write_timeout, log=ctx.log)
    return OutputRunner(ctx, sink, backoff=Backoff(maximum=cfg.backoff_max))


def encoder(*, framing: str, host: str, facility: str = "user",
            app_name: str = "") -> Callable[[list[Event]], bytes]:
    """The function that renders a batch's events as the bytes to write."""
    if framing == "ndjson":
        return Renderer(fmt="ndjson", host=host).render
    kind = {"syslog-octet": "octet", "syslog-newline": "newline"}[framing]
    return SyslogEncoder(host=host, framing=kind, facility=facility, app_name=app_name).encode


class TcpSink:
    def __init__(self, *, name: str, host: str, port: int,
                 encode: Callable[[list[Event]], bytes], tls: ssl.SSLContext | None = None,
                 server_name: str = "", token: str = "", connect_timeout: float = 5.0,
                 write_timeout: float = 10.0, log: logging.Logger | None = None) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.encode = encode
        self.tls = tls
        self.server_name = server_name or host
        self.token = token
        self.connect_timeout = connect_timeout
        self.write_timeout = write_timeout
        self.log = log or logging.getLogger("log_shuttle")
        self.failures = FailureReporter(who=f"output {name}", log=self.log)
        self.sock: socket.socket | None = None
        self.connects = 0

    def send(self, batch: Batch) -> Verdict:
        payload = self.encode(batch.events)
        if not payload:
            return Verdict.OK
        stage = "connect"
        try:
            sock = self._connection()
            stage = "write"
            sock.settimeout(self.write_timeout)
            sock.sendall(payload)
        except AuthRejected as exc:
            self._close()
            self.failures.failed("auth", f"the server rejected the token ({exc})",
                                 level=logging.ERROR)
            return Verdict.RETRY
        except ssl.SSLError as exc:
            self._close()
            self.failures.failed("tls", f"cannot talk to {self._where()}: {describe(exc)}",
                                 level=logging.ERROR)
            return Verdict.RETRY
        except (OSError, TimeoutError) as exc:
            self._close()
            self.failures.failed(stage, f"cannot {stage} to {self._where()}: {_reason(exc)}")
            return Verdict.RETRY
        self.failures.ok()
        return Verdict.OK

    def close(self) -> None:
        self._close()

    # --- the connection -------------------------------------------------------------------------

    def _where(self) -> str:
        return format_address(self.host, self.port)

    def _connection(self) -> socket.socket:
        if self.sock is not None and self._peer_closed(self.sock):
            self.log.info("output %s: the receiver closed the connection; reconnecting", self.name)
            self._close()
        if self.sock is None:
            self.sock = self._connect()
            self.connects += 1
        return self.sock

    def _connect(self) -> socket.socket:
        raw = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        try:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            sock = raw
            if self.tls is not None:
                sock = self.tls.wrap_socket(raw, server_hostname=self.server_name)
            if self.token:
                self._authenticate(sock)
            return sock
        except BaseException:
            raw.close()
            raise

    def _authenticate(self, sock: socket.socket) -> None:
        sock.settimeout(self.connect_timeout)
        sock.sendall(b"AUTH " + self.token.encode() + b"\n")
        reply = b""
        while not reply.endswith(b"\n") and len(reply) < 64:
            chunk = sock.recv(64 - len(reply))
            if not chunk:
                raise AuthRejected("it closed the connection")
            reply += chunk
        if reply != AUTH_OK:
            raise AuthRejected(f"it answered {reply.strip()[:40]!r}")

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        """True when the receiver sent FIN / close_notify or reset: the connection is dead."""
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            sock.setblocking(False)
            try:
                data = sock.recv(4096)
            finally:
                sock.setblocking(True)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
            return False  # TLS records that were not data (session tickets)
        except (OSError, ValueError):
            return True
        return not data  # data from a receiver that should send none: ignored

    def _close(self) -> None:
        if self.sock is not None:
            try:
                # Read what the receiver sent (TLS session tickets): closing with unread bytes
                # would reset the connection instead of ending it cleanly.
                self._peer_closed(self.sock)
                if isinstance(self.sock, ssl.SSLSocket):
                    self.sock.settimeout(0.5)
                    self.sock = self.sock.unwrap()
            except (OSError, ValueError):
                pass
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return str(exc) or type(exc).__name__
